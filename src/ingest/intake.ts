import type { Telemetry } from "../telemetry/prometheus.ts";
import type { DepthGate } from "./depth-gate.ts";
import type { SubmissionQueue } from "./queue.ts";
import type { MetricSubmission } from "./submission.ts";

/**
 * Where every accepted submission goes, whichever door it came in by (HTTP or MQTT): held while the
 * shared queue is over QUEUE_MAX_DEPTH, made durable by the queue, counted.
 */
export class Intake {
  constructor(
    private readonly queue: SubmissionQueue,
    private readonly telemetry: Telemetry,
    private readonly depthGate?: DepthGate,
  ) {}

  /** False while the shared queue is over its depth: new work would have to wait. */
  get open(): boolean {
    return this.depthGate?.open ?? true;
  }

  /** Resolves once the submission is durable; waits first while the queue is too deep. */
  async submit(submission: MetricSubmission): Promise<void> {
    await this.depthGate?.admit();
    await this.queue.submit(submission);
    this.telemetry.jobsEnqueued.inc();
    this.telemetry.accepted.inc({ source: submission.source }, submission.metrics.length);
  }

  /** Lets every waiting submission through (shutdown: pending batches must be flushed). */
  close(): void {
    this.depthGate?.close();
  }
}
