import type { FastifyInstance } from "fastify";
import fp from "fastify-plugin";
import type { Revocations } from "../../credentials/revocations.ts";
import type { CredentialStore, TokenRole } from "../../credentials/store.ts";
import { AGENT_ID_PATTERN, isStorableText } from "../../ingest/payload.ts";
import type { SubmissionQueue } from "../../ingest/queue.ts";
import type { TenantLimitsStore } from "../../limits/limits-store.ts";
import { effectiveLimits, LIMITS, type LimitOverrides } from "../../limits/tenant-limits.ts";
import { requireAdmin } from "../access.ts";
import { ApiError } from "../errors.ts";

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;
const TOKEN_ROLES: TokenRole[] = ["ingest", "viewer"];

function tenantParam(params: unknown): string {
  const { id } = params as { id: string };
  if (!UUID.test(id)) throw new ApiError(404, "not_found", `tenant ${id} does not exist`);
  return id;
}

function bodyField(body: unknown, field: string): unknown {
  return typeof body === "object" && body !== null ? (body as Record<string, unknown>)[field] : undefined;
}

/** Admin API (Bearer admin token): tenants, agents, tokens, revocation. Secrets are shown once. */
export const adminRoutes = fp(
  async (
    app: FastifyInstance,
    options: {
      credentials: CredentialStore;
      revocations: Revocations;
      tenantLimits: TenantLimitsStore;
      queue: SubmissionQueue;
    },
  ) => {
    const { credentials, revocations, tenantLimits, queue } = options;
    const admin = {
      preHandler: async (request: Parameters<typeof app.authenticate>[0]) => {
        await app.authenticate(request);
        requireAdmin(request.principal);
      },
    };

    app.post("/api/v1/admin/tenants", admin, async (request, reply) => {
      const name = bodyField(request.body, "name");
      if (typeof name !== "string" || name.trim().length === 0 || name.length > 200 || !isStorableText(name)) {
        throw new ApiError(
          400,
          "bad_request",
          "name must be a non-empty string of at most 200 characters, with no NUL",
        );
      }
      return reply.status(201).send(await credentials.createTenant(name.trim()));
    });

    app.post("/api/v1/admin/tenants/:id/agents", admin, async (request, reply) => {
      const tenantId = tenantParam(request.params);
      const agentId = bodyField(request.body, "agent_id");
      if (typeof agentId !== "string" || !AGENT_ID_PATTERN.test(agentId)) {
        throw new ApiError(400, "bad_agent_id", "agent_id must be 1-64 characters of A-Z a-z 0-9 . _ -");
      }
      const { username, password } = await credentials.createAgent(tenantId, agentId);
      return reply.status(201).send({ tenant_id: tenantId, agent_id: agentId, username, password });
    });

    app.post("/api/v1/admin/tenants/:id/tokens", admin, async (request, reply) => {
      const tenantId = tenantParam(request.params);
      const role = bodyField(request.body, "role");
      if (!TOKEN_ROLES.includes(role as TokenRole)) {
        throw new ApiError(400, "bad_request", `role must be one of ${TOKEN_ROLES.join(", ")}`);
      }
      const { username, token } = await credentials.createToken(tenantId, role as TokenRole);
      return reply.status(201).send({ tenant_id: tenantId, role, username, token });
    });

    /** A tenant's limits in the API's names: what holds, its overrides, and the defaults. */
    const limitsView = (tenantId: string, overrides: LimitOverrides) => {
      const named = (values: LimitOverrides) =>
        Object.fromEntries(LIMITS.map(({ key, api }) => [api, values[key] ?? null]));
      return {
        tenant_id: tenantId,
        limits: named(effectiveLimits(tenantLimits.defaults, overrides)),
        overrides: named(overrides),
        defaults: named(tenantLimits.defaults),
      };
    };

    app.get("/api/v1/admin/tenants/:id/limits", admin, async (request) => {
      const tenantId = tenantParam(request.params);
      if (!(await credentials.tenantExists(tenantId))) {
        throw new ApiError(404, "not_found", `tenant ${tenantId} does not exist`);
      }
      return limitsView(tenantId, await tenantLimits.overrides(tenantId));
    });

    app.put(
      "/api/v1/admin/tenants/:id/limits",
      {
        ...admin,
        schema: {
          body: {
            type: "object",
            additionalProperties: false,
            minProperties: 1,
            properties: Object.fromEntries(
              LIMITS.map(({ api }) => [api, { type: ["integer", "null"], minimum: 1, maximum: 2_147_483_647 }]),
            ),
          },
        },
      },
      async (request) => {
        const tenantId = tenantParam(request.params);
        const body = request.body as Record<string, number | null>;
        const changes = Object.fromEntries(
          LIMITS.filter(({ api }) => api in body).map(({ key, api }) => [key, body[api]]),
        ) as LimitOverrides;
        return limitsView(tenantId, await tenantLimits.set(tenantId, changes));
      },
    );

    app.get(
      "/api/v1/admin/jobs/failed",
      {
        ...admin,
        schema: {
          querystring: { type: "object", properties: { limit: { type: "integer", minimum: 0, maximum: 1000 } } },
        },
      },
      async (request) => {
        const { limit = 20 } = request.query as { limit?: number };
        const failed = await queue.failedJobs(limit);
        return {
          count: failed.count,
          oldest_failed_at: failed.oldestFailedAt ? new Date(failed.oldestFailedAt).toISOString() : null,
          reasons: failed.reasons,
          jobs: failed.jobs.map((job) => ({
            id: job.id,
            tenant_id: job.tenantId,
            readings: job.readings,
            reason: job.reason,
            failed_at: new Date(job.failedAt).toISOString(),
            attempts: job.attempts,
          })),
        };
      },
    );

    app.post(
      "/api/v1/admin/jobs/failed/retry",
      {
        ...admin,
        schema: {
          body: {
            type: "object",
            additionalProperties: false,
            properties: {
              all: { type: "boolean" },
              ids: { type: "array", items: { type: "string", pattern: "^[0-9a-f-]{36}$" }, maxItems: 10_000 },
            },
          },
        },
      },
      async (request) => {
        const { all, ids } = request.body as { all?: boolean; ids?: string[] };
        if (Boolean(all) === (ids !== undefined)) {
          throw new ApiError(400, "bad_request", 'give either {"all": true} or {"ids": [...]}');
        }
        return { retried: await queue.retryFailed(all ? "all" : (ids as string[])) };
      },
    );

    app.delete("/api/v1/admin/credentials/:username", admin, async (request, reply) => {
      const { username } = request.params as { username: string };
      if (!(await credentials.revoke(username))) {
        throw new ApiError(404, "not_found", `credential ${username} does not exist`);
      }
      // The revocation is committed; telling the other processes only makes it take effect sooner.
      await revocations
        .announce(username)
        .catch((error: Error) =>
          request.log.warn({ err: error, username }, "could not announce a revocation; caches expire it"),
        );
      return reply.status(204).send();
    });
  },
  { name: "admin-routes", dependencies: ["auth"] },
);
