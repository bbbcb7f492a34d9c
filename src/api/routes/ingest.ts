import { randomUUID } from "node:crypto";
import type { FastifyInstance } from "fastify";
import fp from "fastify-plugin";
import type { ZodTypeProvider } from "fastify-type-provider-zod";
import { z } from "zod";
import type { PayloadLimits } from "../../config.ts";
import { QueueUnavailableError } from "../../errors.ts";
import type { Intake } from "../../ingest/intake.ts";
import { type ParsedBatch, parseItems, parseNamedReading } from "../../ingest/payload.ts";
import type { RateLimiter } from "../../limits/rate-limiter.ts";
import type { LiveRejections } from "../../live/rejections.ts";
import type { Telemetry } from "../../telemetry/prometheus.ts";
import { ingestTarget } from "../access.ts";
import { ApiError } from "../errors.ts";
import { errorReplies, errorReply } from "../schemas.ts";

/** A request's refusals as the tenant's console sees them: one event per reason, with its count. */
function announce(
  live: LiveRejections,
  tenantId: string,
  agentId: string,
  rejected: ParsedBatch["rejected"],
  at: string,
): Promise<void> {
  const byReason = new Map<string, { first: ParsedBatch["rejected"][number]; count: number }>();
  for (const rejection of rejected) {
    const seen = byReason.get(rejection.reason);
    if (seen) seen.count++;
    else byReason.set(rejection.reason, { first: rejection, count: 1 });
  }
  return Promise.all(
    [...byReason.values()].map(({ first, count }) =>
      live.publish(tenantId, {
        agent_id: agentId,
        source: "http",
        reason: first.reason,
        message: first.message,
        count,
        at,
      }),
    ),
  ).then(() => undefined);
}

/** POST /api/v1/metrics: validates each item, submits the valid ones, answers once durable. */
export const ingestRoutes = fp(
  async (
    app: FastifyInstance,
    options: {
      intake: Intake;
      limiter: RateLimiter;
      telemetry: Telemetry;
      limits: PayloadLimits;
      rejections: LiveRejections;
    },
  ) => {
    const { intake, limiter, telemetry, limits } = options;
    // Rejections are announced in the background: the client's answer never waits on the console.
    const announceQuietly = (tenantId: string, agentId: string, rejected: ParsedBatch["rejected"], at: string) =>
      void announce(options.rejections, tenantId, agentId, rejected, at).catch(() => undefined);

    app.withTypeProvider<ZodTypeProvider>().post(
      "/api/v1/metrics",
      {
        onRequest: app.authenticate,
        schema: {
          summary: "Submit readings; 202 once they are durable",
          description:
            "Each item is judged on its own: the valid ones are stored, the others come back in `rejected` with their reason.",
          tags: ["metrics"],
          body: z.object(
            {
              agent_id: z.string().optional().describe("required with an ingest token; an agent writes as itself"),
              metrics: z
                .array(z.unknown())
                // Items are judged one by one in the handler; the document still shows their shape.
                .meta({ items: { $ref: "#/components/schemas/Reading" } })
                .describe("readings, each a Reading"),
            },
            { error: 'the body must be {"agent_id"?: string, "metrics": [...]}' },
          ),
          response: {
            202: z.object({ accepted: z.int(), rejected: errorReply.shape.rejected.unwrap() }),
            ...errorReplies,
          },
        },
      },
      async (request, reply) => {
        const receivedAt = Date.now();
        const { tenantId, agentId } = ingestTarget(request.principal, request.body.agent_id);
        const items = request.body.metrics;
        if (items.length === 0) throw new ApiError("bad_request", "metrics is empty");
        if (items.length > limits.maxBatchItems) {
          telemetry.rejected.inc({ source: "http", reason: "too_many" }, items.length);
          throw new ApiError("too_many", `at most ${limits.maxBatchItems} metrics per request`);
        }

        const { points, rejected } = parseItems(items, (item) => parseNamedReading(item, receivedAt, limits));
        telemetry.countRejections(
          "http",
          rejected.map((r) => r.reason),
        );
        if (rejected.length > 0) announceQuietly(tenantId, agentId, rejected, new Date(receivedAt).toISOString());
        const first = rejected[0];
        if (points.length === 0 && first) {
          throw new ApiError(first.reason, `no metric was valid; first: ${first.message}`, { extra: { rejected } });
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
            "rate_limited",
            `over the ${limit.replace("_", " ")} limit; nothing was stored, retry after the Retry-After seconds`,
            { retryAfterSeconds: Math.ceil(waitMs / 1000) },
          );
        }
        // Where a broker would hold its acknowledgement (the queue too deep, or its Redis not
        // answering), an HTTP client is told to come back rather than hold a request open.
        const unavailable = intake.unavailable;
        if (unavailable) throw new QueueUnavailableError(unavailable);
        await intake.submit({ id: randomUUID(), tenantId, agentId, source: "http", receivedAt, metrics: points });
        return reply.status(202).send({ accepted: points.length, rejected });
      },
    );
  },
  { name: "ingest-routes", dependencies: ["auth", "openapi"] },
);
