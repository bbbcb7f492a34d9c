/** Every named reason a metric can be refused for; each is counted per source. */
export const REJECTION_REASONS = [
  "bad_topic",
  "bad_json",
  "bad_value",
  "bad_timestamp",
  "too_old",
  "bad_dedupe_id",
  "bad_tags",
  "bad_name",
  "bad_agent_id",
  "too_large",
  "too_many",
  "forbidden",
  "retained_quota",
] as const;

export type RejectionReason = (typeof REJECTION_REASONS)[number];

/** A refusal with its reason; a class so it can never be mistaken for parsed data. */
export class Rejected {
  constructor(
    readonly reason: RejectionReason,
    readonly message: string,
  ) {}
}

export function reject(reason: RejectionReason, message: string): Rejected {
  return new Rejected(reason, message);
}
