import path from "node:path";
import { z } from "zod";
import { LIMITS, type TenantLimits } from "./limits/tenant-limits.ts";

export const ROLES = ["api", "worker", "broker"] as const;
export type Role = (typeof ROLES)[number];

export class ConfigError extends Error {
  override name = "ConfigError";
}

const int = (min: number, max: number) =>
  z.coerce
    .number({ error: "must be a whole number" })
    .int({ error: "must be a whole number" })
    .min(min, { error: `must be at least ${min}` })
    .max(max, { error: `must be at most ${max}` });

const port = int(0, 65535);
/** Limits are stored per tenant in INTEGER columns. */
const MAX_INT32 = 2_147_483_647;
const bool = z.enum(["true", "false"], { error: 'must be "true" or "false"' }).transform((v) => v === "true");
const url = (protocols: string[]) =>
  z.string().refine((v) => URL.canParse(v) && protocols.includes(new URL(v).protocol), {
    error: `must be a URL starting with ${protocols.join(" or ")}//`,
  });

const envSchema = z.object({
  HTTP_HOST: z.string().min(1).default("0.0.0.0"),
  HTTP_PORT: port.default(3000),
  DATA_DIR: z.string().min(1).default("./data"),
  DATABASE_URL: url(["postgresql:", "postgres:"]).optional(),
  REDIS_URL: url(["redis:", "rediss:"]).optional(),
  REDIS_PREFIX: z
    .string()
    .regex(/^[A-Za-z0-9._:-]{1,64}$/, { error: "must be 1-64 characters of A-Z a-z 0-9 . _ : -" })
    .default("edge-ingest"),
  REDIS_PERSISTENCE: z.enum(["aof", "none"], { error: 'must be "aof" or "none"' }).default("aof"),
  REDIS_CHECK_INTERVAL_MS: int(100, 3_600_000).default(30_000),
  ADMIN_TOKEN: z.string().min(32, { error: "must be at least 32 characters" }).optional(),
  ROLES: z
    .string()
    .default(ROLES.join(","))
    .transform((v, ctx) => {
      const roles = v
        .split(",")
        .map((r) => r.trim())
        .filter(Boolean);
      const unknown = roles.filter((r) => !ROLES.includes(r as Role));
      if (roles.length === 0 || unknown.length > 0) {
        ctx.addIssue({ code: "custom", message: `must be a comma-separated list of ${ROLES.join(", ")}` });
        return z.NEVER;
      }
      return new Set(roles as Role[]);
    }),
  MQTT_HOST: z.string().min(1).default("0.0.0.0"),
  MQTT_PORT: port.default(1883),
  MQTT_WS_PORT: port.default(9001),
  MQTT_TLS_PORT: port.default(8883),
  MQTT_WSS_PORT: port.default(9443),
  MQTT_TLS_CERT_FILE: z.string().min(1).optional(),
  MQTT_TLS_KEY_FILE: z.string().min(1).optional(),
  MQTT_ALLOW_ANONYMOUS: bool.default(false),
  MQTT_MAX_CONNECTIONS: int(1, 1_000_000).default(10_000),
  MQTT_MAX_PACKET_BYTES: int(64, 256 * 1024 * 1024).default(256 * 1024),
  MQTT_MAX_PAYLOAD_BYTES: int(16, 256 * 1024 * 1024).default(64 * 1024),
  // The shared emitter adds a level; its matcher (qlobber) throws past 100.
  MQTT_MAX_TOPIC_LEVELS: int(4, 99).default(16),
  MQTT_MAX_CLIENT_ID_LENGTH: int(23, 65535).default(256),
  MQTT_KEEPALIVE_LIMIT_SECONDS: int(0, 65535).default(0),
  MQTT_CONNECT_TIMEOUT_MS: int(100, 600_000).default(30_000),
  MQTT_MAX_OUTGOING_BYTES: int(1024, 1024 * 1024 * 1024).default(1024 * 1024),
  MQTT_MAX_OUTGOING_MESSAGES: int(1, 10_000_000).default(1000),
  MQTT_MAX_VIOLATIONS: int(1, 1_000_000).default(10),
  MQTT_FEEDBACK_INTERVAL_MS: int(10, 3_600_000).default(1000),
  MQTT_MAX_CONNECTION_RATE: int(1, 1_000_000).default(500),
  MQTT_CONNECTION_RATE_BURST: int(1, 1_000_000).default(1000),
  MQTT_MAX_RETAINED_MESSAGES: int(0, 100_000_000).default(10_000),
  MQTT_MAX_RETAINED_BYTES: int(0, 64 * 1024 * 1024 * 1024).default(64 * 1024 * 1024),
  MQTT_MAX_RETAINED_MESSAGES_PER_PRINCIPAL: int(0, 100_000_000).default(1000),
  MQTT_MAX_RETAINED_BYTES_PER_PRINCIPAL: int(0, 64 * 1024 * 1024 * 1024).default(8 * 1024 * 1024),
  AGENT_MAX_READINGS_PER_SECOND: int(1, MAX_INT32).default(1000),
  AGENT_READINGS_BURST: int(1, MAX_INT32).default(5000),
  AGENT_MAX_BYTES_PER_SECOND: int(1, MAX_INT32).default(1024 * 1024),
  AGENT_BYTES_BURST: int(1, MAX_INT32).default(4 * 1024 * 1024),
  TENANT_MAX_READINGS_PER_SECOND: int(1, MAX_INT32).default(20_000),
  TENANT_READINGS_BURST: int(1, MAX_INT32).default(40_000),
  TENANT_MAX_CONNECTIONS: int(1, MAX_INT32).default(1000),
  TENANT_LIMITS_CACHE_TTL_MS: int(0, 3_600_000).default(5000),
  MQTT_BATCH_MAX_MESSAGES: int(1, 100_000).default(500),
  MQTT_BATCH_LINGER_MS: int(0, 10_000).default(3),
  MQTT_MAX_PENDING_MESSAGES: int(1, 10_000_000).default(50_000),
  LOG_LEVEL: z.enum(["fatal", "error", "warn", "info", "debug", "trace", "silent"]).default("info"),
  // Unset: coloured lines on a terminal, JSON lines otherwise (a file, a pipe, a log collector).
  LOG_FORMAT: z.enum(["json", "pretty"], { error: 'must be "json" or "pretty"' }).optional(),
  SHUTDOWN_TIMEOUT_MS: int(1000, 3_600_000).default(30_000),
  MIGRATE_ON_START: bool.default(true),
  HTTP_BODY_LIMIT_BYTES: int(1024, 64 * 1024 * 1024).default(1024 * 1024),
  MAX_BATCH_ITEMS: int(1, 100_000).default(1000),
  MAX_TAGS: int(0, 1000).default(32),
  MAX_TAG_LENGTH: int(1, 10_000).default(256),
  MAX_DEDUPE_ID_LENGTH: int(1, 1024).default(128),
  MAX_FUTURE_SKEW_SECONDS: int(0, 10 * 365 * 86400).default(86400),
  QUERY_MAX_LIMIT: int(1, 100_000).default(1000),
  SSE_HEARTBEAT_MS: int(100, 3_600_000).default(15_000),
  SSE_MAX_BUFFER_BYTES: int(1024, 1024 * 1024 * 1024).default(1024 * 1024),
  CREDENTIAL_CACHE_TTL_MS: int(0, 3_600_000).default(5000),
  WORKER_CONCURRENCY: int(1, 256).default(4),
  JOB_ATTEMPTS: int(1, 100).default(8),
  JOB_BACKOFF_MS: int(1, 3_600_000).default(500),
  DATABASE_WAIT_MAX_MS: int(10, 3_600_000).default(30_000),
  JOB_LOCK_MS: int(1000, 3_600_000).default(10_000),
  JOB_STALLED_CHECK_MS: int(500, 3_600_000).default(5000),
  JOB_MAX_STALLED: int(1, 1000).default(5),
  EMBEDDED_QUEUE_MAX_PENDING: int(1, 1_000_000).default(256),
  QUEUE_MAX_DEPTH: int(1, 100_000_000).default(20_000),
  SUBMISSION_RETENTION_HOURS: int(1, 24 * 365).default(168),
  METRICS_RETENTION_DAYS: int(1, 3650).default(30),
  METRICS_PARTITION_HOURS: z.coerce
    .number()
    .refine((v) => [1, 2, 3, 4, 6, 8, 12, 24].includes(v), {
      error: "must be 1, 2, 3, 4, 6, 8, 12 or 24 (hours that divide a day)",
    })
    .default(24),
  DEDUPE_WINDOW_HOURS: int(1, 24 * 365).default(24),
  SERIES_MAX_POINTS: int(1, 1_000_000).default(10_000),
});

/** Every environment variable the service reads. */
export const CONFIG_VARIABLES = Object.keys(envSchema.shape);

export interface PayloadLimits {
  maxBatchItems: number;
  /** How old a reading may be: older ones are past the retention (`too_old`). */
  maxAgeMs: number;
  maxTags: number;
  maxTagLength: number;
  maxDedupeIdLength: number;
  maxFutureSkewMs: number;
}

export type Config = Omit<
  z.output<typeof envSchema>,
  "MAX_BATCH_ITEMS" | "MAX_TAGS" | "MAX_TAG_LENGTH" | "MAX_DEDUPE_ID_LENGTH" | "MAX_FUTURE_SKEW_SECONDS"
> & {
  mode: "embedded" | "distributed";
  payloadLimits: PayloadLimits;
  /** Every tenant's limits unless overridden for it (src/limits/tenant-limits.ts). */
  tenantLimits: TenantLimits;
};

/** Reads the environment into a typed config; throws a ConfigError naming every bad variable. */
export function loadConfig(env: NodeJS.ProcessEnv = process.env): Config {
  const present = Object.fromEntries(Object.entries(env).filter(([, v]) => v !== undefined && v !== ""));
  const parsed = envSchema.safeParse(present);
  if (!parsed.success) {
    const lines = parsed.error.issues.map((issue) => {
      const name = String(issue.path[0]);
      return `${name}: ${issue.message} (got ${JSON.stringify(env[name])})`;
    });
    throw new ConfigError(`invalid configuration:\n  ${lines.join("\n  ")}`);
  }
  const { MAX_BATCH_ITEMS, MAX_TAGS, MAX_TAG_LENGTH, MAX_DEDUPE_ID_LENGTH, MAX_FUTURE_SKEW_SECONDS, ...rest } =
    parsed.data;

  if (Boolean(rest.DATABASE_URL) !== Boolean(rest.REDIS_URL)) {
    const missing = rest.DATABASE_URL ? "REDIS_URL" : "DATABASE_URL";
    throw new ConfigError(
      `invalid configuration:\n  ${missing}: distributed mode needs both DATABASE_URL and REDIS_URL; set ${missing} or unset the other`,
    );
  }
  if (Boolean(rest.MQTT_TLS_CERT_FILE) !== Boolean(rest.MQTT_TLS_KEY_FILE)) {
    const missing = rest.MQTT_TLS_CERT_FILE ? "MQTT_TLS_KEY_FILE" : "MQTT_TLS_CERT_FILE";
    throw new ConfigError(
      `invalid configuration:\n  ${missing}: TLS needs both MQTT_TLS_CERT_FILE and MQTT_TLS_KEY_FILE`,
    );
  }
  if (rest.MQTT_MAX_OUTGOING_BYTES < rest.MQTT_MAX_PACKET_BYTES) {
    throw new ConfigError(
      `invalid configuration:\n  MQTT_MAX_OUTGOING_BYTES: must be at least MQTT_MAX_PACKET_BYTES (${rest.MQTT_MAX_PACKET_BYTES}), or the largest message could never be sent`,
    );
  }
  const mode = rest.DATABASE_URL ? "distributed" : "embedded";
  if (mode === "distributed" && rest.ROLES.has("api") && !rest.ADMIN_TOKEN) {
    throw new ConfigError(
      "invalid configuration:\n  ADMIN_TOKEN: required in distributed mode with the api role (at least 32 characters)",
    );
  }
  if (mode === "embedded" && rest.ROLES.size !== ROLES.length) {
    throw new ConfigError(
      "invalid configuration:\n  ROLES: embedded mode runs every role in one process; set DATABASE_URL and REDIS_URL to split roles",
    );
  }
  const values = rest as unknown as Record<string, number>;
  const tenantLimits = Object.fromEntries(LIMITS.map(({ key, env }) => [key, values[env]])) as unknown as TenantLimits;
  return {
    ...rest,
    tenantLimits,
    DATA_DIR: path.resolve(rest.DATA_DIR),
    mode,
    payloadLimits: {
      maxBatchItems: MAX_BATCH_ITEMS,
      maxAgeMs: rest.METRICS_RETENTION_DAYS * 86_400_000,
      maxTags: MAX_TAGS,
      maxTagLength: MAX_TAG_LENGTH,
      maxDedupeIdLength: MAX_DEDUPE_ID_LENGTH,
      maxFutureSkewMs: MAX_FUTURE_SKEW_SECONDS * 1000,
    },
  };
}
