import { randomUUID } from "node:crypto";
import { QueueUnavailableError } from "../errors.ts";
import type { Intake } from "../ingest/intake.ts";
import type { RejectionReason } from "../ingest/refusals.ts";
import type { MetricPoint } from "../ingest/submission.ts";
import type { RateLimiter } from "../limits/rate-limiter.ts";
import type { LiveRejections } from "../live/rejections.ts";
import type { Telemetry } from "../telemetry/prometheus.ts";
import { ApiError } from "./errors.ts";

/** What every HTTP door (JSON, line protocol, OTLP) does with the readings it parsed. */
export class ReadingsSubmitter {
  constructor(
    private readonly deps: { intake: Intake; limiter: RateLimiter; telemetry: Telemetry; rejections: LiveRejections },
  ) {}

  /**
   * Counts a request's refused readings and tells the tenant's console, one event per reason with
   * its count, in the background: the client's answer never waits on the console.
   */
  refused(
    tenantId: string,
    agentId: string,
    rejected: readonly { reason: RejectionReason; message: string }[],
    receivedAt: number,
  ): void {
    if (rejected.length === 0) return;
    this.deps.telemetry.countRejections(
      "http",
      rejected.map((r) => r.reason),
    );
    const byReason = new Map<RejectionReason, { message: string; count: number }>();
    for (const { reason, message } of rejected) {
      const seen = byReason.get(reason);
      if (seen) seen.count++;
      else byReason.set(reason, { message, count: 1 });
    }
    const at = new Date(receivedAt).toISOString();
    for (const [reason, { message, count }] of byReason) {
      void this.deps.rejections
        .publish(tenantId, { agent_id: agentId, source: "http", reason, message, count, at })
        .catch(() => undefined);
    }
  }

  /**
   * Charges the readings to their agents' and tenant's rates, then submits them as one submission
   * and resolves once it is durable. Over a rate, or with the queue unable to take it, the request
   * is refused whole and nothing is stored: the client sends it again later.
   */
  async submit(tenantId: string, agentId: string, points: MetricPoint[], bytes: number, receivedAt: number) {
    const { intake, limiter, telemetry } = this.deps;
    const perAgent = new Map<string, number>();
    for (const point of points) {
      const agent = point.agentId ?? agentId;
      perAgent.set(agent, (perAgent.get(agent) ?? 0) + 1);
    }
    for (const [agent, readings] of perAgent) {
      const share = Math.ceil((bytes * readings) / points.length);
      const { waitMs, limit } = await limiter.tryCharge({ tenantId, key: `${tenantId}/${agent}` }, readings, share);
      if (waitMs > 0 && limit) {
        telemetry.httpThrottled.inc({ tenant_id: tenantId, limit });
        throw new ApiError(
          "rate_limited",
          `over the ${limit.replace("_", " ")} limit; nothing was stored, retry after the Retry-After seconds`,
          { retryAfterSeconds: Math.ceil(waitMs / 1000) },
        );
      }
    }
    // Where a broker would hold its acknowledgement (the queue too deep, or its Redis not
    // answering), an HTTP client is told to come back rather than hold a request open.
    const unavailable = intake.unavailable;
    if (unavailable) throw new QueueUnavailableError(unavailable);
    await intake.submit({ id: randomUUID(), tenantId, agentId, source: "http", receivedAt, metrics: points });
  }
}
