import type { FastifyInstance } from "fastify";
import fp from "fastify-plugin";
import type { ZodTypeProvider } from "fastify-type-provider-zod";
import { z } from "zod";
import type { PayloadLimits } from "../../config.ts";
import { parseItems, parseNamedReading } from "../../ingest/payload.ts";
import type { Telemetry } from "../../telemetry/prometheus.ts";
import { ingestTarget } from "../access.ts";
import { decompressBody } from "../decompress.ts";
import { ApiError } from "../errors.ts";
import { errorReplies, errorReply } from "../schemas.ts";
import type { ReadingsSubmitter } from "../submit-readings.ts";

/** POST /api/v1/metrics: validates each item, submits the valid ones, answers once durable. */
export const ingestRoutes = fp(
  async (
    app: FastifyInstance,
    options: { submitter: ReadingsSubmitter; telemetry: Telemetry; limits: PayloadLimits; bodyLimit: number },
  ) => {
    const { submitter, telemetry, limits, bodyLimit } = options;

    app.withTypeProvider<ZodTypeProvider>().post(
      "/api/v1/metrics",
      {
        onRequest: app.authenticate,
        preParsing: decompressBody(bodyLimit),
        config: { ingest: true },
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
        submitter.refused(tenantId, agentId, rejected, receivedAt);
        const first = rejected[0];
        if (points.length === 0 && first) {
          throw new ApiError(first.reason, `no metric was valid; first: ${first.message}`, { extra: { rejected } });
        }
        const bytes = Number(request.headers["content-length"]) || Buffer.byteLength(JSON.stringify(items));
        await submitter.submit(tenantId, agentId, points, bytes, receivedAt);
        return reply.status(202).send({ accepted: points.length, rejected });
      },
    );
  },
  { name: "ingest-routes", dependencies: ["auth", "openapi"] },
);
