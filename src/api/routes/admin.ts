import type { FastifyInstance, FastifyRequest } from "fastify";
import fp from "fastify-plugin";
import type { ZodTypeProvider } from "fastify-type-provider-zod";
import { z } from "zod";
import { holderOfClientId } from "../../broker/access.ts";
import type { TenantAuthorities, TenantAuthority } from "../../credentials/authorities.ts";
import { authorityUsername, CertificateError, parseCertificate } from "../../credentials/certificates.ts";
import type { Revocations } from "../../credentials/revocations.ts";
import type { CredentialStore } from "../../credentials/store.ts";
import { isStorableText } from "../../ingest/payload.ts";
import type { SubmissionQueue } from "../../ingest/queue.ts";
import type { TenantLimitsStore } from "../../limits/limits-store.ts";
import { effectiveLimits, LIMITS, type LimitOverrides } from "../../limits/tenant-limits.ts";
import { type Presence, parseMember } from "../../presence/presence.ts";
import { requireAdmin } from "../access.ts";
import { ApiError } from "../errors.ts";
import { agentId, clientSummary, credentialSummary, errorReplies, tenantId, tenantSummary } from "../schemas.ts";

const tenantParams = z.object({ id: z.string().describe("the tenant's id (a UUID)") });

/** The tenant id of a path: one that is not a UUID names no tenant, 404 as for one that does not exist. */
function tenantOf(params: { id: string }): string {
  if (!tenantId.safeParse(params.id).success) throw new ApiError("not_found", `tenant ${params.id} does not exist`);
  return params.id;
}

const limitValues = z.object(Object.fromEntries(LIMITS.map(({ api }) => [api, z.int().nullable()])));
const limitsReply = z.object({
  tenant_id: z.string(),
  limits: limitValues.describe("what holds"),
  overrides: limitValues.describe("this tenant's own values (null: the default)"),
  defaults: limitValues.describe("the configured defaults"),
});

/** A certificate the request brought that cannot be used: 400 with the reason. */
async function asCertificate<T>(make: () => T | Promise<T>): Promise<Awaited<T>> {
  try {
    return await make();
  } catch (error) {
    if (error instanceof CertificateError) throw new ApiError("bad_request", `certificate: ${error.message}`);
    throw error;
  }
}

const iso = (date: Date | null) => (date ? date.toISOString() : null);

/**
 * Admin API (Bearer admin token): tenants, agents, tokens, credentials and their revocation, limits,
 * connected clients, failed jobs. Secrets are shown once, when made.
 */
export const adminRoutes = fp(
  async (
    app: FastifyInstance,
    options: {
      credentials: CredentialStore;
      authorities: TenantAuthorities;
      revocations: Revocations;
      tenantLimits: TenantLimitsStore;
      queue: SubmissionQueue;
      presence: Presence;
    },
  ) => {
    const { credentials, authorities, revocations, tenantLimits, queue, presence } = options;
    const api = app.withTypeProvider<ZodTypeProvider>();
    const admin = {
      onRequest: async (request: FastifyRequest) => {
        await app.authenticate(request);
        requireAdmin(request.principal);
      },
    };
    const tags = ["admin"];
    const security = [{ bearer: [] }];

    api.get(
      "/api/v1/admin/tenants",
      {
        ...admin,
        schema: { summary: "Every tenant", tags, security, response: { 200: z.array(tenantSummary), ...errorReplies } },
      },
      async () =>
        (await credentials.listTenants()).map((tenant) => ({
          id: tenant.id,
          name: tenant.name,
          created_at: tenant.createdAt.toISOString(),
          agents: tenant.agents,
          active_credentials: tenant.activeCredentials,
        })),
    );

    api.post(
      "/api/v1/admin/tenants",
      {
        ...admin,
        schema: {
          summary: "Create a tenant",
          tags,
          security,
          body: z.object({
            name: z
              .string({ error: "name must be a non-empty string of at most 200 characters, with no NUL" })
              .trim()
              .min(1, { error: "name must be a non-empty string of at most 200 characters, with no NUL" })
              .max(200, { error: "name must be a non-empty string of at most 200 characters, with no NUL" })
              .refine(isStorableText, {
                error: "name must be a non-empty string of at most 200 characters, with no NUL",
              }),
          }),
          response: { 201: z.object({ id: z.string(), name: z.string() }), ...errorReplies },
        },
      },
      async (request, reply) => reply.status(201).send(await credentials.createTenant(request.body.name)),
    );

    api.post(
      "/api/v1/admin/tenants/:id/agents",
      {
        ...admin,
        schema: {
          summary: "Register an agent; its MQTT password (or pinned certificate's fingerprint) is in this reply",
          description:
            "With `certificate` (a PEM certificate, never its key) the agent connects with it over TLS and has no password; its SHA-256 fingerprint is the credential (`ct_…`), revoked like any other (docs/certificates.md).",
          tags,
          security,
          params: tenantParams,
          body: z.object({
            agent_id: agentId,
            certificate: z.string().max(65_536).optional().describe("the device's certificate, PEM"),
          }),
          response: {
            201: z.object({
              tenant_id: z.string(),
              agent_id: z.string(),
              username: z.string(),
              password: z.string().optional().describe("shown once; absent for a pinned certificate"),
            }),
            ...errorReplies,
          },
        },
      },
      async (request, reply) => {
        const { certificate } = request.body;
        const pinned = certificate === undefined ? undefined : await asCertificate(() => parseCertificate(certificate));
        const created = await credentials.createAgent(tenantOf(request.params), request.body.agent_id, pinned);
        return reply.status(201).send({ tenant_id: request.params.id, agent_id: request.body.agent_id, ...created });
      },
    );

    const authority = z
      .object({
        fingerprint: z.string().describe("SHA-256 of the certificate's DER, base64url"),
        subject: z.string(),
        register_agents: z.boolean(),
        not_after: z.string(),
        created_at: z.string(),
      })
      .meta({ id: "TenantCA" });
    const authorityReply = (row: TenantAuthority) => ({
      fingerprint: row.fingerprint,
      subject: row.subject,
      register_agents: row.registerAgents,
      not_after: row.notAfter.toISOString(),
      created_at: row.createdAt.toISOString(),
    });

    api.post(
      "/api/v1/admin/tenants/:id/cas",
      {
        ...admin,
        schema: {
          summary: "Trust a CA for the tenant's device certificates",
          description:
            "A certificate it issues whose subject CN is an agent id connects as that agent of this tenant; with `register_agents` an agent not yet registered is on its first connection (docs/certificates.md).",
          tags,
          security,
          params: tenantParams,
          body: z.object({
            pem: z.string().max(65_536).describe("the CA's certificate, PEM"),
            register_agents: z.boolean().default(false),
          }),
          response: { 201: authority, ...errorReplies },
        },
      },
      async (request, reply) => {
        const { pem, register_agents: registerAgents } = request.body;
        const added = await asCertificate(() => authorities.add(tenantOf(request.params), pem, registerAgents));
        return reply.status(201).send(authorityReply(added));
      },
    );

    api.get(
      "/api/v1/admin/tenants/:id/cas",
      {
        ...admin,
        schema: {
          summary: "The CAs a tenant trusts",
          tags,
          security,
          params: tenantParams,
          response: { 200: z.array(authority), ...errorReplies },
        },
      },
      async (request) => (await authorities.list(tenantOf(request.params))).map(authorityReply),
    );

    api.delete(
      "/api/v1/admin/tenants/:id/cas/:fingerprint",
      {
        ...admin,
        schema: {
          summary: "Stop trusting a tenant CA; its devices' connections end on every broker",
          tags,
          security,
          params: tenantParams.extend({ fingerprint: z.string() }),
          response: { 204: z.null(), ...errorReplies },
        },
      },
      async (request, reply) => {
        const { fingerprint } = request.params;
        if (!(await authorities.remove(tenantOf(request.params), fingerprint))) {
          throw new ApiError("not_found", `the tenant trusts no CA ${fingerprint}`);
        }
        await revocations.announce(authorityUsername(fingerprint));
        return reply.status(204).send(null);
      },
    );

    api.post(
      "/api/v1/admin/tenants/:id/tokens",
      {
        ...admin,
        schema: {
          summary: "Create a tenant token (ingest or viewer); the token is in this reply only",
          tags,
          security,
          params: tenantParams,
          body: z.object({ role: z.enum(["ingest", "viewer"], { error: "role must be one of ingest, viewer" }) }),
          response: {
            201: z.object({ tenant_id: z.string(), role: z.string(), username: z.string(), token: z.string() }),
            ...errorReplies,
          },
        },
      },
      async (request, reply) => {
        const { role } = request.body;
        const { username, token } = await credentials.createToken(tenantOf(request.params), role);
        return reply.status(201).send({ tenant_id: request.params.id, role, username, token });
      },
    );

    api.get(
      "/api/v1/admin/tenants/:id/credentials",
      {
        ...admin,
        schema: {
          summary: "A tenant's credentials (agents' and tokens'), newest first, revoked ones included",
          tags,
          security,
          params: tenantParams,
          response: { 200: z.array(credentialSummary), ...errorReplies },
        },
      },
      async (request) =>
        (await credentials.listCredentials(tenantOf(request.params))).map((credential) => ({
          username: credential.username,
          role: credential.role,
          agent_id: credential.agentId,
          created_at: credential.createdAt.toISOString(),
          revoked_at: iso(credential.revokedAt),
        })),
    );

    api.get(
      "/api/v1/admin/tenants/:id/clients",
      {
        ...admin,
        schema: {
          summary: "The tenant's open MQTT connections, on every broker",
          tags,
          security,
          params: tenantParams,
          response: { 200: z.array(clientSummary), ...errorReplies },
        },
      },
      async (request) => {
        const id = tenantOf(request.params);
        if (!(await credentials.tenantExists(id))) throw new ApiError("not_found", `tenant ${id} does not exist`);
        const members = await presence.members(id);
        return members.flatMap((member) => {
          const { brokerId, clientId } = parseMember(member);
          const holder = holderOfClientId(clientId);
          if (!holder) return [];
          return [
            {
              client_id: holder.clientId,
              broker: brokerId,
              kind: holder.kind,
              agent_id: holder.kind === "agent" ? holder.agentId : null,
              username: holder.kind === "viewer" ? holder.username : null,
            },
          ];
        });
      },
    );

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

    api.get(
      "/api/v1/admin/tenants/:id/limits",
      {
        ...admin,
        schema: {
          summary: "A tenant's limits",
          tags,
          security,
          params: tenantParams,
          response: { 200: limitsReply, ...errorReplies },
        },
      },
      async (request) => {
        const id = tenantOf(request.params);
        if (!(await credentials.tenantExists(id))) throw new ApiError("not_found", `tenant ${id} does not exist`);
        return limitsView(id, await tenantLimits.overrides(id));
      },
    );

    api.put(
      "/api/v1/admin/tenants/:id/limits",
      {
        ...admin,
        schema: {
          summary: "Override some of a tenant's limits (null: back to the default)",
          tags,
          security,
          params: tenantParams,
          body: z
            .strictObject(
              Object.fromEntries(
                LIMITS.map(({ api }) => [api, z.int().min(1).max(2_147_483_647).nullable().optional()]),
              ),
            )
            .refine((body) => Object.keys(body).length > 0, { error: "give at least one limit" }),
          response: { 200: limitsReply, ...errorReplies },
        },
      },
      async (request) => {
        const body = request.body as Record<string, number | null | undefined>;
        const changes = Object.fromEntries(
          LIMITS.filter(({ api }) => body[api] !== undefined).map(({ key, api }) => [key, body[api]]),
        ) as LimitOverrides;
        const id = tenantOf(request.params);
        return limitsView(id, await tenantLimits.set(id, changes));
      },
    );

    api.get(
      "/api/v1/admin/jobs/failed",
      {
        ...admin,
        schema: {
          summary: "Submissions that used every attempt, waiting to be retried",
          tags,
          security,
          querystring: z.object({ limit: z.coerce.number().int().min(0).max(1000).default(20) }),
          response: {
            200: z.object({
              count: z.int(),
              oldest_failed_at: z.string().nullable(),
              reasons: z.array(z.object({ reason: z.string(), count: z.int() })).describe("the most common first"),
              jobs: z.array(
                z.object({
                  id: z.string(),
                  tenant_id: z.string(),
                  readings: z.int(),
                  reason: z.string(),
                  failed_at: z.string(),
                  attempts: z.int(),
                }),
              ),
            }),
            ...errorReplies,
          },
        },
      },
      async (request) => {
        const failed = await queue.failedJobs(request.query.limit);
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

    api.post(
      "/api/v1/admin/jobs/failed/retry",
      {
        ...admin,
        schema: {
          summary: "Put failed submissions back in the queue",
          tags,
          security,
          body: z
            .strictObject({
              all: z.boolean().optional(),
              ids: z
                .array(z.string().regex(/^[0-9a-f-]{36}$/))
                .max(10_000)
                .optional(),
            })
            .refine((body) => Boolean(body.all) !== (body.ids !== undefined), {
              error: 'give either {"all": true} or {"ids": [...]}',
            }),
          response: { 200: z.object({ retried: z.int() }), ...errorReplies },
        },
      },
      async (request) => {
        const { all, ids } = request.body;
        return { retried: await queue.retryFailed(all ? "all" : (ids as string[])) };
      },
    );

    api.delete(
      "/api/v1/admin/credentials/:username",
      {
        ...admin,
        schema: {
          summary: "Revoke a credential: its connections and streams end, on every process",
          tags,
          security,
          params: z.object({ username: z.string() }),
          response: { 204: z.undefined().describe("revoked (or already revoked)"), ...errorReplies },
        },
      },
      async (request, reply) => {
        const { username } = request.params;
        if (!(await credentials.revoke(username))) {
          throw new ApiError("not_found", `credential ${username} does not exist`);
        }
        // The revocation is committed; telling the other processes only makes it take effect sooner.
        await revocations
          .announce(username)
          .catch((error: Error) =>
            request.log.warn({ err: error, username }, "could not announce a revocation; caches expire it"),
          );
        return reply.status(204).send();
      },
    );
  },
  { name: "admin-routes", dependencies: ["auth", "openapi"] },
);
