import type { Principal } from "../credentials/store.ts";
import { type AgentRule, agentRule } from "../formats/agents.ts";
import { METRIC_NAME_PATTERN } from "../ingest/payload.ts";
import { type Rejected, reject } from "../ingest/refusals.ts";
import {
  FEEDBACK_ROOT,
  feedbackTopic,
  isTenantNamespace,
  LINE_PROTOCOL_LEVEL,
  METRICS_ROOT,
  SESSION_MARKER_TOPIC,
} from "./topics.ts";

/** Who an MQTT connection acts as: a verified credential, or anonymous when that is switched on. */
export type MqttPrincipal = Principal | { kind: "anonymous" };

export type PublishDecision =
  | { kind: "metric"; tenantId: string; agentId: string; name: string }
  /** Line protocol: each line's readings, for the agent itself. */
  | { kind: "lines"; tenantId: string; agentId: string; agent: AgentRule }
  /** Routed like any broker would: anonymous or admin traffic outside the tenant namespace. */
  | { kind: "plain" }
  | ({ kind: "rejected" } & Rejected);

/**
 * What a publish may do. Agents publish only `metrics/{own tenant}/{own agent}/{metric}` (or line
 * protocol under `metrics/{own tenant}/{own agent}/$influx`); a topic
 * naming another tenant or agent is `forbidden` (and counts towards disconnection), a malformed one
 * under the agent's own prefix is `bad_topic`.
 */
export function decidePublish(principal: MqttPrincipal, topic: string): PublishDecision {
  if (principal.kind === "agent") {
    const levels = topic.split("/");
    if (levels[0] !== METRICS_ROOT || levels[1] !== principal.tenantId || levels[2] !== principal.agentId) {
      return {
        kind: "rejected",
        ...reject("forbidden", `an agent publishes only under metrics/${principal.tenantId}/${principal.agentId}/`),
      };
    }
    const name = levels[3];
    if (name === LINE_PROTOCOL_LEVEL) {
      const { tenantId, agentId } = principal;
      return { kind: "lines", tenantId, agentId, agent: agentRule(principal, ["agent_id"]) };
    }
    if (levels.length !== 4 || name === undefined || !METRIC_NAME_PATTERN.test(name)) {
      return {
        kind: "rejected",
        ...reject(
          "bad_topic",
          "the topic must be metrics/{tenant}/{agent}/{metric}, metric 1-128 of A-Z a-z 0-9 _ . : -",
        ),
      };
    }
    return { kind: "metric", tenantId: principal.tenantId, agentId: principal.agentId, name };
  }
  if ((principal.kind === "anonymous" || principal.kind === "admin") && !isTenantNamespace(topic)) {
    return { kind: "plain" };
  }
  return { kind: "rejected", ...reject("forbidden", "this connection may not publish to that topic") };
}

/**
 * What a subscription filter may cover. Agents: their own feedback topic. Viewers: filters under
 * `metrics/{own tenant}/`. Admin and anonymous: any filter, as any MQTT broker allows (generic
 * tooling subscribes to `#`); what reaches them is what `mayReceive` lets through, which for
 * anonymous clients is never a tenant's topic or `$SYS`. Every session may hold the session marker.
 */
export function maySubscribe(principal: MqttPrincipal, filter: string): boolean {
  if (filter === SESSION_MARKER_TOPIC) return true;
  const levels = filter.split("/");
  const first = levels[0] ?? "";
  switch (principal.kind) {
    case "admin":
    case "anonymous":
      return true;
    case "agent":
      return filter === feedbackTopic(principal.tenantId, principal.agentId);
    case "token":
      return (
        principal.role === "viewer" && first === METRICS_ROOT && levels[1] === principal.tenantId && levels.length >= 3
      );
  }
}

/**
 * Last check before a message is written to a subscriber, so no routing path (retained messages,
 * restored sessions, other brokers) can hand a connection a topic it may not read.
 */
export function mayReceive(principal: MqttPrincipal, topic: string): boolean {
  switch (principal.kind) {
    case "admin":
      return true;
    case "agent":
      return topic === feedbackTopic(principal.tenantId, principal.agentId);
    case "token":
      return principal.role === "viewer" && topic.startsWith(`${METRICS_ROOT}/${principal.tenantId}/`);
    case "anonymous":
      return !isTenantNamespace(topic);
  }
}

/**
 * The scope of a principal's shared-subscription groups: principals of one scope may form a group
 * (a tenant's viewers, whatever their tokens), and every member may receive what the group gets.
 */
export function shareScope(principal: MqttPrincipal): string {
  switch (principal.kind) {
    case "admin":
      return "admin";
    case "anonymous":
      return "anonymous";
    case "agent":
      return `agent:${principal.tenantId}/${principal.agentId}`;
    case "token":
      return viewerScope(principal.tenantId);
  }
}

/** The scope of a tenant's viewers, the one whose groups get the tenant's stored readings. */
export function viewerScope(tenantId: string): string {
  return `viewer:${tenantId}`;
}

/**
 * The scopes whose members may receive `topic`: the groups it can be offered to. The inverse of
 * `mayReceive`, scope by scope (test/broker/access.test.ts holds them to each other).
 */
export function scopesReceiving(topic: string): string[] {
  const levels = topic.split("/");
  if (!isTenantNamespace(topic)) return ["admin", "anonymous"];
  if (levels[0] === METRICS_ROOT && levels.length > 2 && levels[1]) return ["admin", viewerScope(levels[1])];
  if (levels[0] === FEEDBACK_ROOT && levels.length === 4 && levels[3] === "errors") {
    return ["admin", `agent:${levels[1]}/${levels[2]}`];
  }
  return ["admin"];
}

/**
 * Why a CONNECT's client id is refused (CONNACK 2, "identifier rejected"), or undefined: a NUL or
 * invalid UTF-8 (decoded as U+FFFD) is not an MQTT string (MQTT-1.5.3-1, -2); a persistent session
 * needs an id to find it by (MQTT-3.1.3-8).
 */
export function clientIdRefusal(clientId: string, cleanSession: boolean, maxLength: number): string | undefined {
  if (clientId === "" && !cleanSession) return "a persistent session (CleanSession=0) needs a client id";
  if (clientId.length > maxLength) return `client ids are at most ${maxLength} characters`;
  if (clientId.includes("\u0000") || clientId.includes("\uFFFD")) return "the client id is not valid UTF-8 without NUL";
  return undefined;
}

const NAMESPACE_PATTERN = /^a\/([0-9a-f-]{36})\/([A-Za-z0-9._-]{1,64})\//;

/**
 * Client ids are namespaced by principal, so two principals can never share a session: a client
 * id reused by another tenant or agent is a different session, not a take-over of this one.
 */
export function namespacedClientId(principal: MqttPrincipal, clientId: string): string {
  switch (principal.kind) {
    case "agent":
      return `a/${principal.tenantId}/${principal.agentId}/${clientId}`;
    case "token":
      return `v/${principal.username}/${clientId}`;
    case "admin":
      return `admin/${clientId}`;
    case "anonymous":
      return `anon/${clientId}`;
  }
}

/**
 * The agent behind a namespaced client id: a will message left by a client whose broker died is
 * published by another broker, where that client has no live connection to ask.
 */
export function agentOfClientId(namespacedId: string): { tenantId: string; agentId: string } | undefined {
  const match = NAMESPACE_PATTERN.exec(namespacedId);
  return match ? { tenantId: match[1] as string, agentId: match[2] as string } : undefined;
}

/** Who holds a connection, from its namespaced client id: an agent or a viewer, and the id it sent. */
export function holderOfClientId(
  namespacedId: string,
):
  | { kind: "agent"; agentId: string; clientId: string }
  | { kind: "viewer"; username: string; clientId: string }
  | undefined {
  const agent = NAMESPACE_PATTERN.exec(namespacedId);
  if (agent) return { kind: "agent", agentId: agent[2] as string, clientId: namespacedId.slice(agent[0].length) };
  const viewer = /^v\/([^/]+)\//.exec(namespacedId);
  if (viewer) return { kind: "viewer", username: viewer[1] as string, clientId: namespacedId.slice(viewer[0].length) };
  return undefined;
}
