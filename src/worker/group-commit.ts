import type { MetricSubmission } from "../ingest/submission.ts";

interface Waiting {
  submission: MetricSubmission;
  resolve(): void;
  reject(error: unknown): void;
}

export interface GroupCommitOptions {
  /** Statements running at once; what arrives meanwhile waits for the next. */
  maxInFlight: number;
  /** Most readings one statement takes (a submission is never split). */
  maxReadings: number;
  /** Whether a failed group should be written again one submission at a time (a bad one must not fail the rest). */
  isolate(error: unknown): boolean;
}

/**
 * Group commit: a submission is written at once when a statement is free; those that arrive while
 * `maxInFlight` statements run wait, and the next statement takes them together, oldest first.
 * Quiet, every job has a statement of its own; with a backlog, the worker's many jobs in flight go
 * a few statements at a time, and a statement's fixed cost is shared between them. Each `add`
 * settles when its own submission is stored or has failed.
 */
export class GroupCommit {
  private readonly waiting: Waiting[] = [];
  private running = 0;

  constructor(
    private readonly write: (group: MetricSubmission[]) => Promise<void>,
    private readonly options: GroupCommitOptions,
  ) {}

  add(submission: MetricSubmission): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      this.waiting.push({ submission, resolve, reject });
      this.pump();
    });
  }

  private pump(): void {
    while (this.running < this.options.maxInFlight && this.waiting.length > 0) {
      const group = this.take(this.waiting);
      this.running++;
      void this.run(group).finally(() => {
        this.running--;
        this.pump();
      });
    }
  }

  /** The oldest waiting submissions of a queue, up to `maxReadings` readings (at least one submission). */
  private take(queue: Waiting[]): Waiting[] {
    let readings = 0;
    let count = 0;
    while (count < queue.length) {
      const size = (queue[count] as Waiting).submission.metrics.length;
      if (count > 0 && readings + size > this.options.maxReadings) break;
      readings += size;
      count++;
    }
    return queue.splice(0, count);
  }

  private async run(group: Waiting[]): Promise<void> {
    try {
      await this.write(group.map((waiting) => waiting.submission));
      for (const waiting of group) waiting.resolve();
    } catch (error) {
      if (group.length === 1 || !this.options.isolate(error)) {
        for (const waiting of group) waiting.reject(error);
        return;
      }
      for (const waiting of group) await this.write([waiting.submission]).then(waiting.resolve, waiting.reject);
    }
  }
}
