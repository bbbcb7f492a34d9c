import type { FastifyInstance } from "fastify";
import fp from "fastify-plugin";
import type { ZodTypeProvider } from "fastify-type-provider-zod";
import type { Registry } from "prom-client";
import { z } from "zod";
import { within } from "../../deadline.ts";

export type ReadinessCheck = () => Promise<void>;

/** A probe is answered within a second, whatever hangs behind it: a check that has not answered is "not ready". */
const CHECK_DEADLINE_MS = 800;

const readiness = z.object({
  status: z.enum(["ready", "not_ready"]),
  checks: z.record(z.string(), z.string()).describe('each dependency: "ok" or why not'),
});

/**
 * /healthz (the process answers), /readyz (its dependencies answer), /metrics (Prometheus). Every
 * process serves them, whatever its roles, so each can be probed and scraped.
 */
export const healthRoutes = fp(
  async (app: FastifyInstance, options: { checks: Record<string, ReadinessCheck>; registry: Registry }) => {
    const api = app.withTypeProvider<ZodTypeProvider>();
    const tags = ["operations"];
    const security: [] = [];

    api.get(
      "/healthz",
      {
        schema: {
          summary: "Liveness: the process answers",
          tags,
          security,
          response: { 200: z.object({ status: z.literal("ok") }) },
        },
      },
      async () => ({ status: "ok" as const }),
    );

    api.get(
      "/readyz",
      {
        schema: {
          summary: "Readiness: the database, the queue (and Redis) answer",
          tags,
          security,
          response: { 200: readiness, 503: readiness },
        },
      },
      async (_request, reply) => {
        const results = await Promise.all(
          Object.entries(options.checks).map(async ([name, check]) => {
            try {
              await within(check(), CHECK_DEADLINE_MS, `no answer within ${CHECK_DEADLINE_MS} ms`);
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
      },
    );

    api.get(
      "/metrics",
      {
        schema: {
          summary: "This process's metrics, in the Prometheus text format",
          tags,
          security,
          response: {
            200: { description: "Prometheus exposition format", content: { "text/plain": { schema: z.string() } } },
          },
        },
      },
      async (_request, reply) => reply.type(options.registry.contentType).send(await options.registry.metrics()),
    );
  },
  { name: "health-routes", dependencies: ["openapi"] },
);
