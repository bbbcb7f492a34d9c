import { randomUUID } from "node:crypto";
import type { FastifyInstance } from "fastify";
import fp from "fastify-plugin";
import type { PayloadLimits } from "../../config.ts";
import type { Intake } from "../../ingest/intake.ts";
import { parseItems, parseNamedReading } from "../../ingest/payload.ts";
import { QueueUnavailableError } from "../../ingest/queue.ts";
import type { RateLimiter } from "../../limits/rate-limiter.ts";
import type { Telemetry } from "../../telemetry/metrics.ts";
import { ingestTarget } from "../access.ts";
import { ApiError } from "../errors.ts";

/** POST /api/v1/metrics: validates each item, submits the valid ones, answers once durable. */
export const ingestRoutes = fp(
  async (
    app: FastifyInstance,
    options: { intake: Intake; limiter: RateLimiter; telemetry: Telemetry; limits: PayloadLimits },
  ) => {
    const { intake, limiter, telemetry, limits } = options;

    app.post("/api/v1/metrics", { preHandler: app.authenticate }, async (request, reply) => {
      const receivedAt = Date.now();
      const body = request.body as { agent_id?: unknown; metrics?: unknown } | null;
      if (typeof body !== "object" || body === null || !Array.isArray(body.metrics)) {
        throw new ApiError(400, "bad_request", 'the body must be {"agent_id"?: string, "metrics": [...]}');
      }
      const { tenantId, agentId } = ingestTarget(request.principal, body.agent_id);
      const items: unknown[] = body.metrics;
      if (items.length === 0) throw new ApiError(400, "bad_request", "metrics is empty");
      if (items.length > limits.maxBatchItems) {
        telemetry.rejected.inc({ source: "http", reason: "too_many" }, items.length);
        throw new ApiError(400, "too_many", `at most ${limits.maxBatchItems} metrics per request`);
      }

      const { points, rejected } = parseItems(items, (item) => parseNamedReading(item, receivedAt, limits));
      telemetry.countRejections(
        "http",
        rejected.map((r) => r.reason),
      );
      const first = rejected[0];
      if (points.length === 0 && first) {
        throw new ApiError(400, first.reason, `no metric was valid; first: ${first.message}`, { rejected });
      }

      // Over its rate the request is refused whole: nothing is stored, the client sends it again later.
      const bytes = Number(request.headers["content-length"]) || Buffer.byteLength(JSON.stringify(items));
      const { waitMs, limit } = await limiter.tryCharge(
        { tenantId, key: `${tenantId}/${agentId}` },
        items.length,
        bytes,
      );
      if (waitMs > 0 && limit) {
        telemetry.httpThrottled.inc({ tenant_id: tenantId, limit });
        throw new ApiError(
          429,
          "rate_limited",
          `over the ${limit.replace("_", " ")} limit; nothing was stored, retry after the Retry-After seconds`,
          {},
          Math.ceil(waitMs / 1000),
        );
      }
      // Over QUEUE_MAX_DEPTH an HTTP client is told to come back, as a broker stops acknowledging.
      if (!intake.open) throw new QueueUnavailableError("the queue is over QUEUE_MAX_DEPTH (workers are behind)");
      await intake.submit({ id: randomUUID(), tenantId, agentId, source: "http", receivedAt, metrics: points });
      return reply.status(202).send({ accepted: points.length, rejected });
    });
  },
  { name: "ingest-routes", dependencies: ["auth"] },
);
