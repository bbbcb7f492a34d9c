import { QueueUnavailableError } from "../errors.ts";
import type { FailedSummary, SubmissionProcessor, SubmissionQueue } from "./queue.ts";
import type { MetricSubmission } from "./submission.ts";

/**
 * Embedded mode: the submission is processed in the caller's turn, so `submit` resolves after the
 * database commit, and a failure reaches the producer (which answers 503 or withholds the PUBACK)
 * instead of sitting in a retry set. Bounded: past `maxPending` in-flight submissions it refuses.
 */
export class InProcessQueue implements SubmissionQueue {
  readonly backend = "in-process";
  private pending = 0;
  private closed = false;
  private idle: (() => void) | undefined;

  constructor(
    private readonly process: SubmissionProcessor,
    private readonly maxPending: number,
  ) {}

  async submit(submission: MetricSubmission): Promise<void> {
    if (this.closed) throw new QueueUnavailableError("the queue is shutting down");
    if (this.pending >= this.maxPending) {
      throw new QueueUnavailableError(`the queue is full (${this.maxPending} submissions in flight)`);
    }
    this.pending++;
    try {
      await this.process(submission);
    } finally {
      this.pending--;
      if (this.pending === 0) this.idle?.();
    }
  }

  async depth(): Promise<number> {
    return this.pending;
  }

  async ping(): Promise<void> {
    if (this.closed) throw new QueueUnavailableError("the queue is shutting down");
  }

  /** Nothing ever waits in a failed set here: a failure is answered to the producer at once. */
  async failedJobs(): Promise<FailedSummary> {
    return { count: 0, reasons: [], jobs: [] };
  }

  async retryFailed(): Promise<number> {
    return 0;
  }

  /** Refuses new work and waits for what is in flight. */
  async close(): Promise<void> {
    this.closed = true;
    if (this.pending > 0) await new Promise<void>((resolve) => (this.idle = resolve));
  }
}
