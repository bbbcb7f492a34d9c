import type { MetricSubmission } from "./submission.ts";

/** Where producers hand submissions over. `submit` resolves only once the submission is durable. */
export interface SubmissionQueue {
  readonly backend: "in-process" | "bullmq";
  submit(submission: MetricSubmission): Promise<void>;
  /** Why a new submission would only be held now (its store does not answer), if it would. */
  readonly unavailable?: string;
  /** Jobs waiting, delayed or running. */
  depth(): Promise<number>;
  /** Throws when the queue cannot take work. */
  ping(): Promise<void>;
  /** The submissions that used their last attempt: how many, since when, why, the newest `limit`. */
  failedJobs(limit: number): Promise<FailedSummary>;
  /** Puts failed submissions back in the queue, these or all of them; returns how many. */
  retryFailed(ids: string[] | "all"): Promise<number>;
  close(): Promise<void>;
}

export interface FailedSubmission {
  id: string;
  tenantId: string;
  readings: number;
  reason: string;
  failedAt: number;
  attempts: number;
}

export interface FailedSummary {
  count: number;
  /** When the oldest of them failed (epoch ms). */
  oldestFailedAt?: number;
  /** Their reasons, with how many had each (among the newest thousand). */
  reasons: { reason: string; count: number }[];
  /** The newest, newest first. */
  jobs: FailedSubmission[];
}

export type SubmissionProcessor = (submission: MetricSubmission) => Promise<void>;
