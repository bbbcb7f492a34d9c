import type { Telemetry } from "../telemetry/prometheus.ts";
import type { StallWatch } from "../telemetry/stall-watch.ts";
import type { DepthGate } from "./depth-gate.ts";
import type { SubmissionQueue } from "./queue.ts";
import type { MetricSubmission } from "./submission.ts";

/**
 * Where every accepted submission goes, whichever door it came in by (HTTP or MQTT): held while the
 * shared queue is over QUEUE_MAX_DEPTH, made durable by the queue, counted. `holds` says when
 * acknowledgements wait, and on what.
 */
export class Intake {
  /** What a submission waits on while the queue writes it. */
  private readonly durableOn: string;

  constructor(
    private readonly queue: SubmissionQueue,
    private readonly telemetry: Telemetry,
    private readonly holds: StallWatch,
    private readonly depthGate?: DepthGate,
  ) {
    this.durableOn = queue.backend === "bullmq" ? "the queue's Redis" : "the database";
  }

  /** Why a new submission would only be held now (the queue over its depth, its store not answering), if it would. */
  get unavailable(): string | undefined {
    if (this.depthGate && !this.depthGate.open) return "the queue is over QUEUE_MAX_DEPTH (workers are behind)";
    return this.queue.unavailable;
  }

  /** Resolves once the submission is durable; waits first while the queue is too deep. */
  async submit(submission: MetricSubmission): Promise<void> {
    const gated = this.depthGate && !this.depthGate.open;
    await this.holds.track(gated ? "the queue's depth (over QUEUE_MAX_DEPTH)" : this.durableOn, async (waiting) => {
      if (gated) {
        await this.depthGate?.admit();
        waiting.waitOn(this.durableOn);
      }
      await this.queue.submit(submission);
    });
    this.telemetry.jobsEnqueued.inc();
    this.telemetry.accepted.inc({ source: submission.source }, submission.metrics.length);
  }

  /** Lets every waiting submission through (shutdown: pending batches must be flushed). */
  close(): void {
    this.depthGate?.close();
  }
}
