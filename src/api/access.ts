import type { Principal } from "../credentials/store.ts";
import { AGENT_ID_PATTERN, METRIC_NAME_PATTERN } from "../ingest/payload.ts";
import { ApiError } from "./errors.ts";

const forbidden = (message: string) => new ApiError("forbidden", message);

/** Who may write readings in a format that names its agents itself: an agent's credential or an ingest token. */
export function writer(principal: Principal): Extract<Principal, { kind: "agent" } | { kind: "token" }> {
  if (principal.kind === "agent" || (principal.kind === "token" && principal.role === "ingest")) return principal;
  throw forbidden("writing metrics needs an agent credential or an ingest token");
}

/**
 * The agent a request's refusals are listed under in the console: the agent itself, else the agent
 * the request named (or its first reading's), else the ingest token.
 */
export function refusalsAgent(principal: Extract<Principal, { kind: "agent" } | { kind: "token" }>, named?: string) {
  return principal.kind === "agent" ? principal.agentId : (named ?? principal.username);
}

/** Which agent a write is for: an agent writes as itself; an ingest token names the agent. */
export function ingestTarget(principal: Principal, requestedAgentId: unknown): { tenantId: string; agentId: string } {
  if (principal.kind === "agent") {
    if (requestedAgentId !== undefined && requestedAgentId !== principal.agentId) {
      throw forbidden("an agent credential writes only its own agent_id");
    }
    return { tenantId: principal.tenantId, agentId: principal.agentId };
  }
  if (principal.kind === "token" && principal.role === "ingest") {
    if (typeof requestedAgentId !== "string" || !AGENT_ID_PATTERN.test(requestedAgentId)) {
      throw new ApiError("bad_agent_id", "agent_id is required with an ingest token: 1-64 of A-Z a-z 0-9 . _ -");
    }
    return { tenantId: principal.tenantId, agentId: requestedAgentId };
  }
  throw forbidden("writing metrics needs an agent credential or an ingest token");
}

/** A `name` filter: absent, or a metric name of the grammar (anything else could match nothing). */
export function metricNameFilter(raw: string | undefined): string | undefined {
  if (raw !== undefined && !METRIC_NAME_PATTERN.test(raw)) {
    throw new ApiError("bad_name", "name must be 1-128 characters of A-Z a-z 0-9 _ . : -");
  }
  return raw;
}

/** What a read may see: always one tenant; an agent sees only its own data. */
export function readScope(
  principal: Principal,
  requestedAgentId: string | undefined,
): { tenantId: string; agentId?: string } {
  if (requestedAgentId !== undefined && !AGENT_ID_PATTERN.test(requestedAgentId)) {
    throw new ApiError("bad_agent_id", "agent_id must be 1-64 characters of A-Z a-z 0-9 . _ -");
  }
  if (principal.kind === "agent") {
    if (requestedAgentId !== undefined && requestedAgentId !== principal.agentId) {
      throw forbidden("an agent credential reads only its own agent_id");
    }
    return { tenantId: principal.tenantId, agentId: principal.agentId };
  }
  if (principal.kind === "token") {
    return requestedAgentId === undefined
      ? { tenantId: principal.tenantId }
      : { tenantId: principal.tenantId, agentId: requestedAgentId };
  }
  throw forbidden("reading metrics needs a tenant token or an agent credential");
}

export function requireAdmin(principal: Principal): void {
  if (principal.kind !== "admin") throw forbidden("this needs the admin token");
}
