import type { FastifyInstance } from "fastify";
import fp from "fastify-plugin";
import type { Registry } from "prom-client";

export type ReadinessCheck = () => Promise<void>;

/** /healthz (the process answers), /readyz (its dependencies answer), /metrics (Prometheus). */
export const healthRoutes = fp(
  async (app: FastifyInstance, options: { checks: Record<string, ReadinessCheck>; registry: Registry }) => {
    app.get("/healthz", async () => ({ status: "ok" }));

    app.get("/readyz", async (_request, reply) => {
      const results = await Promise.all(
        Object.entries(options.checks).map(async ([name, check]) => {
          try {
            await check();
            return [name, "ok"] as const;
          } catch (error) {
            return [name, (error as Error).message || "unreachable"] as const;
          }
        }),
      );
      const ready = results.every(([, status]) => status === "ok");
      return reply
        .status(ready ? 200 : 503)
        .send({ status: ready ? "ready" : "not_ready", checks: Object.fromEntries(results) });
    });

    app.get("/metrics", async (_request, reply) =>
      reply.type(options.registry.contentType).send(await options.registry.metrics()),
    );
  },
  { name: "health-routes" },
);
