import type { FastifyInstance } from "fastify";
import fp from "fastify-plugin";
import type { ZodTypeProvider } from "fastify-type-provider-zod";
import { z } from "zod";
import { holderOfClientId } from "../../broker/access.ts";
import type { CredentialStore } from "../../credentials/store.ts";
import { type Presence, parseMember } from "../../presence/presence.ts";
import type { AgentDirectory } from "../../store/agents.ts";
import { readScope } from "../access.ts";
import { ApiError } from "../errors.ts";
import { pageOf } from "../paging.ts";
import { agentId, agentSummary, errorReplies, page, pageLimit, whoami } from "../schemas.ts";

/** How many open connections each agent of the tenant has, on every broker. */
export async function connectionsByAgent(presence: Presence, tenantId: string): Promise<Map<string, number>> {
  const counts = new Map<string, number>();
  for (const member of await presence.members(tenantId)) {
    const holder = holderOfClientId(parseMember(member).clientId);
    if (holder?.kind === "agent") counts.set(holder.agentId, (counts.get(holder.agentId) ?? 0) + 1);
  }
  return counts;
}

/** Who the caller is (what the console shows it) and the tenant's agents with their activity. */
export const agentRoutes = fp(
  async (
    app: FastifyInstance,
    options: {
      credentials: CredentialStore;
      agents: AgentDirectory;
      presence: Presence;
      maxLimit: number;
      mqtt: () => { port: number; ws_port: number };
    },
  ) => {
    const { credentials, agents, presence } = options;
    const api = app.withTypeProvider<ZodTypeProvider>();

    api.get(
      "/api/v1/whoami",
      {
        onRequest: app.authenticate,
        schema: {
          summary: "The caller's credential: admin, a tenant token, or an agent",
          response: { 200: whoami, ...errorReplies },
        },
      },
      async (request) => {
        const principal = request.principal;
        const mqtt = options.mqtt();
        if (principal.kind === "admin") return { kind: "admin" as const, mqtt };
        const tenantName = (await credentials.tenantName(principal.tenantId)) ?? "";
        const common = { username: principal.username, tenant_id: principal.tenantId, tenant_name: tenantName, mqtt };
        return principal.kind === "agent"
          ? { kind: "agent" as const, ...common, agent_id: principal.agentId }
          : { kind: "token" as const, ...common, role: principal.role };
      },
    );

    api.get(
      "/api/v1/agents",
      {
        onRequest: app.authenticate,
        schema: {
          summary: "The tenant's agents: connected (on any broker), last seen, readings in the last hour",
          tags: ["agents"],
          querystring: z.object({
            agent_id: agentId.optional(),
            limit: pageLimit(options.maxLimit),
            cursor: agentId.optional().describe("next_cursor of the previous page"),
          }),
          response: { 200: page(agentSummary), ...errorReplies },
        },
      },
      async (request) => {
        const { limit, cursor } = request.query;
        const scope = readScope(request.principal, request.query.agent_id);
        const [rows, connections] = await Promise.all([
          agents.list(scope, limit + 1, cursor),
          connectionsByAgent(presence, scope.tenantId).catch((error: Error) => {
            throw new ApiError("unavailable", `cannot read who is connected: ${error.message}`);
          }),
        ]);
        return pageOf(
          rows,
          limit,
          (last) => last.agent_id,
          (row) => {
            const count = connections.get(row.agent_id) ?? 0;
            return { ...row, connected: count > 0, connections: count };
          },
        );
      },
    );
  },
  { name: "agent-routes", dependencies: ["auth", "openapi"] },
);
