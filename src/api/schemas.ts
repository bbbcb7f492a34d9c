import { z } from "zod";
import { AGENT_ID_PATTERN, METRIC_NAME_PATTERN } from "../ingest/payload.ts";
import { REJECTION_REASONS } from "../ingest/refusals.ts";
import { SERIES_AGGREGATES, type SeriesAggregate } from "../store/readings.ts";

// The API's request and reply shapes: fastify validates requests with them (the handlers' types
// come from them), serializes replies by them, and the OpenAPI document at /api/openapi.json is
// generated from them.

/** A string of a pattern, with one message for anything else (missing included). */
const patterned = (pattern: RegExp, message: string) => z.string({ error: message }).regex(pattern, { error: message });

export const agentId = patterned(AGENT_ID_PATTERN, "agent_id must be 1-64 characters of A-Z a-z 0-9 . _ -");
export const metricName = patterned(METRIC_NAME_PATTERN, "name must be 1-128 characters of A-Z a-z 0-9 _ . : -");
export const tenantId = z.uuid({ error: "must be a tenant id (a UUID)" });
export const timestamp = z.string().describe("ISO-8601 in UTC with milliseconds");
const tags = z.record(z.string(), z.string()).nullable();

/** Every error: a code a program can branch on and a message a person can act on. */
export const errorReply = z
  .object({
    error: z.object({ code: z.string(), message: z.string() }),
    rejected: z
      .array(z.object({ index: z.int().optional(), reason: z.enum(REJECTION_REASONS), message: z.string() }))
      .optional()
      .describe("ingestion: why each refused item was refused"),
  })
  .meta({ id: "Error" });

/** The error replies every authenticated route can give. */
export const errorReplies = { "4xx": errorReply, "5xx": errorReply };

/** `from` / `to`: ISO-8601 or epoch milliseconds, read as epoch milliseconds. */
export const timeParam = (name: string) =>
  z
    .string({ error: `${name} must be ISO-8601 or epoch milliseconds` })
    .describe("ISO-8601 or epoch milliseconds")
    .transform((raw, ctx) => {
      const ms = /^\d+$/.test(raw) ? Number(raw) : Date.parse(raw);
      if (Number.isFinite(ms)) return ms;
      ctx.addIssue({ code: "custom", message: `${name} must be ISO-8601 or epoch milliseconds` });
      return z.NEVER;
    });

const STEP_UNITS: Record<string, number> = { s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 };

/** `step`: a whole number of seconds, minutes, hours or days (`30s`, `1m`, `6h`, `1d`), read as milliseconds. */
const STEP_MESSAGE = "step must be a whole number and a unit: s, m, h or d (e.g. 1m)";
export const stepParam = z
  .string({ error: STEP_MESSAGE })
  .regex(/^[1-9]\d{0,6}[smhd]$/, { error: STEP_MESSAGE })
  .transform((raw) => Number(raw.slice(0, -1)) * (STEP_UNITS[raw.slice(-1)] as number));

/** `agg`: a comma-separated list of aggregates, each once. */
export const aggregatesParam = z
  .string()
  .default("avg")
  .transform((raw, ctx) => {
    const asked = raw.split(",").filter(Boolean);
    if (asked.length > 0 && asked.every((a) => SERIES_AGGREGATES.includes(a as SeriesAggregate))) {
      return [...new Set(asked)] as SeriesAggregate[];
    }
    ctx.addIssue({ code: "custom", message: `agg must be a comma-separated list of ${SERIES_AGGREGATES.join(", ")}` });
    return z.NEVER;
  });

export const pageLimit = (max: number) =>
  z.coerce
    .number()
    .int({ error: `limit must be a whole number from 1 to ${max}` })
    .min(1, { error: `limit must be a whole number from 1 to ${max}` })
    .max(max, { error: `limit must be a whole number from 1 to ${max}` })
    .default(Math.min(100, max));

export const cursorParam = z.string().max(1024).describe("next_cursor of the previous page");

export const metricRow = z
  .object({
    id: z.string(),
    agent_id: z.string(),
    name: z.string(),
    value: z.number(),
    ts: timestamp,
    dedupe_id: z.string().nullable(),
    tags,
    received_at: timestamp,
    stored_at: timestamp,
  })
  .meta({ id: "Metric" });

export const latestRow = z
  .object({
    agent_id: z.string(),
    name: z.string(),
    value: z.number(),
    ts: timestamp,
    tags,
    received_at: timestamp,
  })
  .meta({ id: "LatestValue" });

export const seriesBucket = z
  .object({
    start: timestamp,
    ...Object.fromEntries(SERIES_AGGREGATES.map((agg) => [agg, z.number().nullable().optional()])),
  })
  .meta({ id: "SeriesBucket" });

export const page = <T extends z.ZodType>(item: T) =>
  z.object({ items: z.array(item), next_cursor: z.string().nullable() });

export const agentSummary = z
  .object({
    agent_id: z.string(),
    registered: z.boolean().describe("whether the agent has (or had) a credential of its own"),
    connected: z.boolean().describe("whether it has an MQTT connection open, on any broker"),
    connections: z.int(),
    last_seen_at: timestamp.nullable().describe("when a reading of it was last stored"),
    readings_last_hour: z.int().describe("readings stored in the last hour"),
  })
  .meta({ id: "Agent" });

export const credentialSummary = z
  .object({
    username: z.string(),
    role: z.enum(["agent", "ingest", "viewer"]),
    agent_id: z.string().nullable(),
    created_at: timestamp,
    revoked_at: timestamp.nullable(),
  })
  .meta({ id: "Credential" });

export const tenantSummary = z
  .object({
    id: z.string(),
    name: z.string(),
    created_at: timestamp,
    agents: z.int(),
    active_credentials: z.int(),
  })
  .meta({ id: "Tenant" });

export const clientSummary = z
  .object({
    client_id: z.string().describe("as the client sent it"),
    broker: z.string().describe("the id of the broker process it is connected to"),
    kind: z.enum(["agent", "viewer"]),
    agent_id: z.string().nullable(),
    username: z.string().nullable().describe("the viewer token's username"),
  })
  .meta({ id: "MqttClient" });

const mqttPorts = z
  .object({ port: z.int(), ws_port: z.int() })
  .describe("where devices connect: MQTT over TCP, and over WebSockets (0: not served)");

export const whoami = z.discriminatedUnion("kind", [
  z.object({ kind: z.literal("admin"), mqtt: mqttPorts }),
  z.object({
    kind: z.literal("token"),
    role: z.enum(["ingest", "viewer"]),
    username: z.string(),
    tenant_id: z.string(),
    tenant_name: z.string(),
    mqtt: mqttPorts,
  }),
  z.object({
    kind: z.literal("agent"),
    username: z.string(),
    tenant_id: z.string(),
    tenant_name: z.string(),
    agent_id: z.string(),
    mqtt: mqttPorts,
  }),
]);

export const liveRejection = z
  .object({
    agent_id: z.string(),
    source: z.enum(["mqtt", "http"]),
    reason: z.enum(REJECTION_REASONS),
    message: z.string(),
    count: z.int().describe("refusals of this reason this event stands for"),
    topic: z.string().optional(),
    at: timestamp,
  })
  .meta({ id: "Rejection" });

/** One reading in POST /api/v1/metrics (validated item by item, see src/ingest/payload.ts). */
export const reading = z.object({
  name: z.string(),
  value: z.number(),
  timestamp: z.union([z.string(), z.number()]).optional().describe("ISO-8601, epoch seconds or milliseconds"),
  dedupe_id: z.string().optional().describe("stored once within DEDUPE_WINDOW_HOURS"),
  tags: z.record(z.string(), z.string()).optional(),
});
