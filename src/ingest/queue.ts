import type { MetricSubmission } from "./submission.ts";

/** Where producers hand submissions over. `submit` resolves only once the submission is durable. */
export interface SubmissionQueue {
  readonly backend: "in-process" | "bullmq";
  submit(submission: MetricSubmission): Promise<void>;
  /** Jobs waiting, delayed or running. */
  depth(): Promise<number>;
  /** Throws when the queue cannot take work. */
  ping(): Promise<void>;
  close(): Promise<void>;
}

/** The queue cannot take the submission now; nothing was stored, the producer may retry. */
export class QueueUnavailableError extends Error {
  override name = "QueueUnavailableError";
}

export type SubmissionProcessor = (submission: MetricSubmission) => Promise<void>;
