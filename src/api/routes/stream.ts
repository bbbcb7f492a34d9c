import type { FastifyInstance } from "fastify";
import fp from "fastify-plugin";
import type { ZodTypeProvider } from "fastify-type-provider-zod";
import { z } from "zod";
import type { Revocations } from "../../credentials/revocations.ts";
import type { FanOut, StoredMetric } from "../../live/fanout.ts";
import type { LiveRejection, LiveRejections } from "../../live/rejections.ts";
import { readScope } from "../access.ts";
import { agentId, errorReplies, metricName } from "../schemas.ts";

function metricEvent(metric: StoredMetric): string {
  const data = {
    id: metric.id,
    agent_id: metric.agentId,
    name: metric.name,
    value: metric.value,
    ts: metric.ts,
    tags: metric.tags,
  };
  return `event: metric\nid: ${metric.id}\ndata: ${JSON.stringify(data)}\n\n`;
}

const rejectionEvent = (rejection: LiveRejection) => `event: rejection\ndata: ${JSON.stringify(rejection)}\n\n`;

const STREAMS = ["metrics", "rejections"] as const;

/**
 * GET /api/v1/stream: Server-Sent Events of newly stored metrics of the caller's tenant, and, with
 * `include=rejections`, of its refused readings with their reasons. A client that cannot keep up
 * (more than `maxBufferBytes` unsent) is disconnected, so a slow dashboard never grows this
 * process's memory; EventSource reconnects by itself. A stream ends when its credential is
 * revoked, wherever the revocation was made.
 */
export const streamRoutes = fp(
  async (
    app: FastifyInstance,
    options: {
      fanout: FanOut;
      rejections: LiveRejections;
      revocations: Revocations;
      heartbeatMs: number;
      maxBufferBytes: number;
    },
  ) => {
    /** Each open stream's end, with the username of the credential it was opened with. */
    const open = new Map<() => void, string | undefined>();
    const stopRevocations = await options.revocations.onRevoked((username) => {
      for (const [end, owner] of open) if (owner === username) end();
    });

    app.withTypeProvider<ZodTypeProvider>().get(
      "/api/v1/stream",
      {
        onRequest: app.authenticate,
        schema: {
          summary: "Live stored metrics (event: metric) and refusals (event: rejection), as Server-Sent Events",
          tags: ["metrics"],
          security: [{ bearer: [] }, { basic: [] }, { queryToken: [] }],
          querystring: z.object({
            agent_id: agentId.optional(),
            name: metricName.optional().describe("only this metric's readings"),
            include: z
              .string()
              .default("metrics")
              .transform((raw, ctx) => {
                const asked = raw.split(",").filter(Boolean);
                if (asked.length > 0 && asked.every((s) => STREAMS.includes(s as (typeof STREAMS)[number]))) {
                  return new Set(asked);
                }
                ctx.addIssue({ code: "custom", message: `include must be a comma-separated list of ${STREAMS}` });
                return z.NEVER;
              })
              .describe("metrics, rejections, or both (metrics,rejections)"),
          }),
          response: {
            200: {
              description:
                "text/event-stream: `event: metric` with a stored reading, `event: rejection` with a refusal",
              content: { "text/event-stream": { schema: z.string() } },
            },
            ...errorReplies,
          },
        },
      },
      async (request, reply) => {
        const { name, include } = request.query;
        const scope = readScope(request.principal, request.query.agent_id);
        const res = reply.hijack().raw;
        let end = () => {};
        const overflowing = () => {
          if (res.writableLength > options.maxBufferBytes) end();
        };
        const unsubscribers: (() => void)[] = [];
        if (include.has("metrics")) {
          const send = (metrics: StoredMetric[]) => {
            for (const metric of metrics) {
              if (scope.agentId !== undefined && metric.agentId !== scope.agentId) continue;
              if (name !== undefined && metric.name !== name) continue;
              res.write(metricEvent(metric));
            }
            overflowing();
          };
          unsubscribers.push(await options.fanout.subscribe(scope.tenantId, send));
        }
        if (include.has("rejections")) {
          const send = (rejection: LiveRejection) => {
            if (scope.agentId !== undefined && rejection.agent_id !== scope.agentId) return;
            res.write(rejectionEvent(rejection));
            overflowing();
          };
          unsubscribers.push(await options.rejections.subscribe(scope.tenantId, send));
        }
        const unsubscribe = () => {
          for (const stop of unsubscribers) stop();
        };
        if (request.raw.destroyed) {
          unsubscribe();
          return;
        }
        res.writeHead(200, {
          "content-type": "text/event-stream; charset=utf-8",
          "cache-control": "no-cache",
          connection: "keep-alive",
          "x-accel-buffering": "no",
        });
        res.write("retry: 3000\n: connected\n\n");
        const heartbeat = setInterval(() => res.write(": heartbeat\n\n"), options.heartbeatMs);
        end = () => {
          if (!open.delete(end)) return;
          clearInterval(heartbeat);
          unsubscribe();
          res.end();
        };
        open.set(end, "username" in request.principal ? request.principal.username : undefined);
        request.raw.on("close", end);
      },
    );

    app.addHook("preClose", async () => {
      stopRevocations();
      for (const end of [...open.keys()]) end();
    });
  },
  { name: "stream-routes", dependencies: ["auth", "openapi"] },
);
