import type { Principal } from "../credentials/store.ts";
import { AGENT_ID_PATTERN } from "../ingest/payload.ts";
import { type Rejected, reject } from "../ingest/refusals.ts";

/** Which agent a line (its tags) or an OTLP resource (its attributes) is for, and which key named it. */
export interface AgentRule {
  of(attributes: Record<string, string>): { agentId: string; key?: string } | Rejected;
}

/**
 * An agent's credential writes as that agent: `explicitKey` may only repeat its id (and is then
 * dropped from the tags). An ingest token names the agent: the first of `keys` present, else the
 * request's `agent_id`, must be a valid agent id.
 */
export function agentRule(
  principal: Extract<Principal, { kind: "agent" } | { kind: "token" }>,
  keys: readonly [explicitKey: string, ...fallbacks: string[]],
  requested?: string,
): AgentRule {
  const [explicitKey] = keys;
  if (principal.kind === "agent") {
    const own = principal.agentId;
    return {
      of(attributes) {
        const named = attributes[explicitKey];
        if (named === undefined) return { agentId: own };
        if (named !== own)
          return reject("bad_agent_id", `an agent credential writes only its own agent (${own}), not ${named}`);
        return { agentId: own, key: explicitKey };
      },
    };
  }
  return {
    of(attributes) {
      const key = keys.find((candidate) => attributes[candidate] !== undefined);
      const agentId = key === undefined ? requested : attributes[key];
      if (agentId === undefined) {
        return reject(
          "bad_agent_id",
          `an ingest token needs the agent named: ${keys.join(" or ")}, or agent_id in the query`,
        );
      }
      if (!AGENT_ID_PATTERN.test(agentId)) {
        return reject(
          "bad_agent_id",
          `agent id ${JSON.stringify(agentId.slice(0, 70))} is not 1-64 of A-Z a-z 0-9 . _ -`,
        );
      }
      return key === undefined ? { agentId } : { agentId, key };
    },
  };
}
