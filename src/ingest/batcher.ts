import { randomUUID } from "node:crypto";
import type { MetricPoint, MetricSubmission } from "./submission.ts";

export interface BatcherOptions {
  /** Flush a batch once it holds this many readings. */
  maxBatch: number;
  /** Flush a batch this long after its first reading at the latest. */
  lingerMs: number;
  /** Readings accepted but not yet durable, across all batches; past it `add` waits. */
  maxPending: number;
}

interface Batch {
  tenantId: string;
  agentId: string;
  receivedAt: number;
  points: MetricPoint[];
  /** One promise for every reading of the batch: settled when the submission is. */
  durable: Promise<void>;
  settle: { resolve: () => void; reject: (error: Error) => void };
  timer: NodeJS.Timeout;
}

/**
 * Coalesces the readings of many MQTT publishes into one submission per tenant every few
 * milliseconds (or every `maxBatch` readings), so one queue write and one database statement carry
 * many messages. Readings of an agent other than the batch's first name their agent. Each `add`
 * resolves when its batch is durable and rejects when the batch could not be submitted.
 */
export class SubmissionBatcher {
  private readonly batches = new Map<string, Batch>();
  private readonly inFlight = new Set<Promise<void>>();
  private readonly capacityWaiters: (() => void)[] = [];
  private pendingReadings = 0;

  constructor(
    private readonly submit: (submission: MetricSubmission) => Promise<void>,
    private readonly options: BatcherOptions,
  ) {}

  /** Readings accepted and not yet durable. */
  get pending(): number {
    return this.pendingReadings;
  }

  add(tenantId: string, agentId: string, points: MetricPoint[], receivedAt: number): Promise<void> {
    // The caller's publish is not acknowledged while it waits here, so its socket is not read further.
    if (this.pendingReadings >= this.options.maxPending) {
      return new Promise<void>((resolve) => this.capacityWaiters.push(resolve)).then(() =>
        this.add(tenantId, agentId, points, receivedAt),
      );
    }
    this.pendingReadings += points.length;
    let batch = this.batches.get(tenantId);
    if (!batch) {
      let settle!: Batch["settle"];
      const durable = new Promise<void>((resolve, reject) => (settle = { resolve, reject }));
      // A batch nobody awaits any more must not turn its failure into an unhandled rejection.
      durable.catch(() => undefined);
      batch = {
        tenantId,
        agentId,
        receivedAt,
        points: [],
        durable,
        settle,
        timer: setTimeout(() => this.flush(tenantId), this.options.lingerMs),
      };
      this.batches.set(tenantId, batch);
    }
    if (agentId !== batch.agentId) for (const point of points) point.agentId = agentId;
    for (const point of points) batch.points.push(point);
    const { durable } = batch;
    if (batch.points.length >= this.options.maxBatch) this.flush(tenantId);
    return durable;
  }

  private flush(key: string): void {
    const batch = this.batches.get(key);
    if (!batch) return;
    this.batches.delete(key);
    clearTimeout(batch.timer);
    const submission: MetricSubmission = {
      id: randomUUID(),
      tenantId: batch.tenantId,
      agentId: batch.agentId,
      source: "mqtt",
      receivedAt: batch.receivedAt,
      metrics: batch.points,
    };
    const tracked = this.submit(submission)
      .then(batch.settle.resolve, batch.settle.reject)
      .finally(() => {
        this.inFlight.delete(tracked);
        this.pendingReadings -= batch.points.length;
        for (const wake of this.capacityWaiters.splice(0)) wake();
      });
    this.inFlight.add(tracked);
  }

  /** Submits every open batch now and waits until all submissions in flight have settled. */
  async flushAll(): Promise<void> {
    while (this.batches.size > 0 || this.inFlight.size > 0) {
      for (const key of [...this.batches.keys()]) this.flush(key);
      await Promise.all(this.inFlight);
    }
  }
}
