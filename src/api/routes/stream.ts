import type { FastifyInstance } from "fastify";
import fp from "fastify-plugin";
import type { Revocations } from "../../credentials/revocations.ts";
import type { FanOut, StoredMetric } from "../../live/fanout.ts";
import { metricNameFilter, readScope } from "../access.ts";

function toEvent(metric: StoredMetric): string {
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

/**
 * GET /api/v1/stream: Server-Sent Events of newly stored metrics of the caller's tenant.
 * A client that cannot keep up (more than `maxBufferBytes` unsent) is disconnected, so a slow
 * dashboard never grows this process's memory; EventSource reconnects by itself. A stream ends when
 * its credential is revoked, wherever the revocation was made.
 */
export const streamRoutes = fp(
  async (
    app: FastifyInstance,
    options: { fanout: FanOut; revocations: Revocations; heartbeatMs: number; maxBufferBytes: number },
  ) => {
    /** Each open stream's end, with the username of the credential it was opened with. */
    const open = new Map<() => void, string | undefined>();
    const stopRevocations = await options.revocations.onRevoked((username) => {
      for (const [end, owner] of open) if (owner === username) end();
    });

    app.get("/api/v1/stream", { preHandler: app.authenticate }, async (request, reply) => {
      const q = request.query as Record<string, string | undefined>;
      const scope = readScope(request.principal, q.agent_id);
      const name = metricNameFilter(q.name);
      const res = reply.hijack().raw;
      let end = () => {};
      const send = (metrics: StoredMetric[]) => {
        for (const metric of metrics) {
          if (scope.agentId !== undefined && metric.agentId !== scope.agentId) continue;
          if (name !== undefined && metric.name !== name) continue;
          res.write(toEvent(metric));
        }
        if (res.writableLength > options.maxBufferBytes) end();
      };
      const unsubscribe = await options.fanout.subscribe(scope.tenantId, send);
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
    });

    app.addHook("preClose", async () => {
      stopRevocations();
      for (const end of [...open.keys()]) end();
    });
  },
  { name: "stream-routes", dependencies: ["auth"] },
);
