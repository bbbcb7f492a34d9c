/** The topics the broker gives a meaning to, in one place. */

export const METRICS_ROOT = "metrics";
export const FEEDBACK_ROOT = "ingest";

/** Where an agent publishes a reading of one metric, and where viewers see it once stored. */
export function metricTopic(tenantId: string, agentId: string, name: string): string {
  return `${METRICS_ROOT}/${tenantId}/${agentId}/${name}`;
}

/**
 * The level after `metrics/{tenant}/{agent}/` under which an agent publishes InfluxDB line protocol
 * (levels after it are ignored, as Telegraf's topic layouts add some). `$` keeps it apart from every
 * metric name.
 */
export const LINE_PROTOCOL_LEVEL = "$influx";

/** Where an agent learns why its publishes were refused. */
export function feedbackTopic(tenantId: string, agentId: string): string {
  return `${FEEDBACK_ROOT}/${tenantId}/${agentId}/errors`;
}

/** The levels of the namespace that belongs to tenants; nobody outside a tenant touches them. */
export function isTenantNamespace(topic: string): boolean {
  const first = topic.split("/", 1)[0];
  return first === METRICS_ROOT || first === FEEDBACK_ROOT || topic.startsWith("$");
}

/**
 * Metric publishes are acknowledged, then renamed to this topic, which no subscription can reach
 * and which the broker does not route at all (src/broker/publish.ts): a rejected publish must never
 * be routed, and an accepted one reaches viewers once stored, through the live fan-out.
 */
export const DISCARD_TOPIC = "$edge-ingest/discarded";

/**
 * Every persistent session holds a subscription to this topic, on which nothing is ever published:
 * Aedes reports session-present only for a session with subscriptions (src/broker/sessions.ts).
 */
export const SESSION_MARKER_TOPIC = "$edge-ingest/session";

/** Topics Aedes routes within this process only (src/broker/emitter.ts). */
export const LOCAL_TOPIC_PREFIX = `${METRICS_ROOT}/`;
