import path from "node:path";
import { z } from "zod";
import { LIMITS, type TenantLimits } from "./limits/tenant-limits.ts";
import { parseSentinels } from "./redis/connection.ts";

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
  HTTP_HOST: z.string().min(1).default("0.0.0.0").describe("HTTP listen address"),
  HTTP_PORT: port.default(3000).describe("HTTP port (`0` picks a free one)"),
  DATA_DIR: z.string().min(1).default("./data").describe("embedded mode: PGlite data and the generated admin token"),
  DATABASE_URL: url(["postgresql:", "postgres:"])
    .optional()
    .describe("PostgreSQL URL; with `REDIS_URL`, selects distributed mode"),
  REDIS_URL: url(["redis:", "rediss:"]).optional().describe("Redis URL for the BullMQ queue and Pub/Sub fan-out"),
  REDIS_SENTINELS: z
    .string()
    .transform((v, ctx) => {
      const sentinels = parseSentinels(v);
      if (sentinels) return sentinels;
      ctx.addIssue({ code: "custom", message: "must be a comma-separated list of host:port" });
      return z.NEVER;
    })
    .optional()
    .describe(
      "Redis Sentinel addresses (`host:port,…`): every Redis connection asks them for the primary and follows a failover without a restart; `REDIS_URL` then gives only the password, database and TLS (`rediss:`) of the primary and replicas, not their address (docs/redis.md)",
    ),
  REDIS_SENTINEL_NAME: z
    .string()
    .min(1)
    .default("edge-ingest")
    .describe("with `REDIS_SENTINELS`: the name of the primary in the sentinels' configuration"),
  REDIS_SENTINEL_PASSWORD: z
    .string()
    .min(1)
    .optional()
    .describe("with `REDIS_SENTINELS`: the sentinels' own password (`requirepass` in sentinel.conf)"),
  REDIS_SENTINEL_TLS: bool.default(false).describe("with `REDIS_SENTINELS`: the sentinels speak TLS"),
  REDIS_TLS_CA_FILE: z
    .string()
    .min(1)
    .optional()
    .describe(
      "PEM certificates trusted, besides the system's, for TLS to Redis (`rediss:`) and to the sentinels (`REDIS_SENTINEL_TLS`): a Redis whose certificate a private CA signed",
    ),
  REDIS_MIN_REPLICAS: int(0, 100)
    .default(0)
    .describe(
      "replicas that must have a submission's job before it is acknowledged (Redis `WAIT` after the write): a PUBACK or `202` then survives a failover to a replica. `0`: acknowledged once the primary has it. On a shortfall within `REDIS_REPLICA_TIMEOUT_MS` nothing is acknowledged and the client sends again (docs/delivery.md)",
    ),
  REDIS_REPLICA_TIMEOUT_MS: int(10, 600_000)
    .default(1_000)
    .describe(
      "with `REDIS_MIN_REPLICAS`: longest wait for the replicas to confirm a write; below `REDIS_COMMAND_TIMEOUT_MS`",
    ),
  REDIS_PREFIX: z
    .string()
    .regex(/^[A-Za-z0-9._:-]{1,64}$/, { error: "must be 1-64 characters of A-Z a-z 0-9 . _ : -" })
    .default("edge-ingest")
    .describe("prefix of every Redis key and channel"),
  REDIS_PERSISTENCE: z
    .enum(["aof", "none"], { error: 'must be "aof" or "none"' })
    .default("aof")
    .describe(
      "`aof`: distributed mode refuses to start unless Redis has `appendonly yes` (and `maxmemory-policy noeviction`); `none`: accept losing queued readings with Redis (a warning at every start)",
    ),
  REDIS_CHECK_INTERVAL_MS: int(100, 3_600_000)
    .default(30_000)
    .describe("how often the queue's Redis is checked again after start-up (`/readyz`, `edge_ingest_redis_check`)"),
  REDIS_COMMAND_TIMEOUT_MS: int(100, 600_000)
    .default(5_000)
    .describe(
      "a Redis command on the acknowledgement path (queue writes, tenant budgets, presence, sessions, retained quota, publishes) that has no answer in this long fails: a Redis that hangs is then an outage the service knows how to wait out, not a silent stall. A queue write is written again with the same job id (its acknowledgement held meanwhile); the others fall back as when Redis is down",
    ),
  DATABASE_TIMEOUT_MS: int(100, 3_600_000)
    .default(30_000)
    .describe(
      "distributed mode: a PostgreSQL connect or statement with no answer in this long fails as unavailable: the worker then waits for the database, as when it is down",
    ),
  ADMIN_TOKEN: z
    .string()
    .min(32, { error: "must be at least 32 characters" })
    .optional()
    .describe("admin API token, 32+ characters; required in distributed mode with the `api` role"),
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
    })
    .describe("roles this process runs (distributed mode may split them)"),
  MQTT_HOST: z.string().min(1).default("0.0.0.0").describe("MQTT listen address (all MQTT listeners)"),
  MQTT_PORT: port.default(1883).describe("MQTT over TCP (`0` picks a free one)"),
  MQTT_WS_PORT: port.default(9001).describe("MQTT over WebSockets, paths `/mqtt` and `/`"),
  MQTT_TLS_PORT: port.default(8883).describe("MQTT over TLS, only when a certificate is configured"),
  MQTT_WSS_PORT: port.default(9443).describe("MQTT over secure WebSockets, only when a certificate is configured"),
  MQTT_TLS_CERT_FILE: z
    .string()
    .min(1)
    .optional()
    .describe("PEM certificate (chain) for the TLS and WSS listeners; needs `MQTT_TLS_KEY_FILE`"),
  MQTT_TLS_KEY_FILE: z.string().min(1).optional().describe("PEM private key for the TLS and WSS listeners"),
  MQTT_TLS_CLIENT_AUTH: z
    .enum(["none", "optional", "required"])
    .default("none")
    .describe(
      "client certificates on the TLS and WSS listeners: `none` (not asked), `optional` (a device with one needs no password; without one it gives a username and password), `required` (no connection there without a valid one); docs/certificates.md",
    ),
  MQTT_TLS_CIPHERS: z
    .string()
    .min(1)
    .optional()
    .describe(
      "OpenSSL cipher list of the TLS and WSS listeners (TLS 1.2; TLS 1.3 keeps its own); unset: Node's default",
    ),
  MQTT_ALLOW_ANONYMOUS: bool
    .default(false)
    .describe("let clients without credentials connect (outside the tenant namespace only)"),
  MQTT_MAX_CONNECTIONS: int(1, 1_000_000)
    .default(10_000)
    .describe(
      "open MQTT connections per broker process; more are closed at once. Each is a file descriptor: the process's open-files limit must exceed it by 256, or the broker warns at start-up (past that limit connections are closed as they arrive, uncounted); the systemd unit and docker-compose.yml set 1,048,576; under Kubernetes it is the container runtime's (the start-up log tells)",
    ),
  MQTT_MAX_PACKET_BYTES: int(64, 256 * 1024 * 1024)
    .default(256 * 1024)
    .describe("largest MQTT packet; a bigger one drops the connection when its header arrives"),
  MQTT_TENANT_TURN_BYTES: int(16 * 1024, 64 * 1024 * 1024)
    .default(16 * 1024)
    .describe(
      "what the connections of one tenant together hand a broker in one turn of its event loop (each connection at most 16 KiB of it): a tenant's many agents cannot fill every turn before another tenant's packets are read; a deployment with one tenant may raise it for throughput (bench/README.md, noisy neighbour)",
    ),
  MQTT_MAX_PAYLOAD_BYTES: int(16, 256 * 1024 * 1024)
    .default(64 * 1024)
    .describe("largest metric payload; a bigger one is rejected `too_large`"),
  // The shared emitter adds a level; its matcher (qlobber) throws past 100.
  MQTT_MAX_TOPIC_LEVELS: int(4, 99)
    .default(16)
    .describe("most levels in a topic (the metric grammar needs 4; at most 99)"),
  MQTT_MAX_CLIENT_ID_LENGTH: int(23, 65535)
    .default(256)
    .describe("longest client id; longer, or with a NUL or invalid UTF-8, is CONNACK 2"),
  MQTT_KEEPALIVE_LIMIT_SECONDS: int(0, 65535).default(0).describe("largest keepalive a client may ask for (`0`: any)"),
  MQTT_RECEIVE_MAXIMUM: int(1, 65535)
    .default(1000)
    .describe(
      "MQTT 5: QoS 1/2 publishes a client may have unacknowledged (Receive Maximum, in the CONNACK); one more is DISCONNECT 0x93. 3.1.1 clients are bounded by backpressure (limits.md)",
    ),
  MQTT_TOPIC_ALIAS_MAXIMUM: int(0, 65535)
    .default(64)
    .describe("MQTT 5: topic aliases a client may set (Topic Alias Maximum, in the CONNACK; `0`: none)"),
  MQTT_MAX_SESSION_EXPIRY_SECONDS: int(1, 4_294_967_295)
    .default(604_800)
    .describe(
      "how long a persistent session (3.1.1 CleanSession=0; MQTT 5 Session Expiry Interval, clamped to it) outlives its connection: then its subscriptions and queued messages are removed (`edge_ingest_mqtt_sessions_expired_total`)",
    ),
  MQTT_SHARED_MAX_INFLIGHT: int(1, 65535)
    .default(100)
    .describe(
      "shared subscriptions: messages a member holds unacknowledged at once (and at most its MQTT 5 Receive Maximum); the group's other messages go to other members",
    ),
  MQTT_SHARED_QUEUE_MAX_MESSAGES: int(1, 100_000_000)
    .default(100_000)
    .describe(
      "shared subscriptions: messages one group holds for its members (not yet delivered or not yet acknowledged); more are not kept for it (`edge_ingest_mqtt_shared_dropped_total`)",
    ),
  MQTT_CONNECT_TIMEOUT_MS: int(100, 600_000)
    .default(30_000)
    .describe("time from TCP connect to CONNECT before the connection is closed"),
  MQTT_MAX_OUTGOING_BYTES: int(1024, 1024 * 1024 * 1024)
    .default(1024 * 1024)
    .describe(
      "bytes waiting to be written to one client, past which it is disconnected (`slow_consumer`); at least `MQTT_MAX_PACKET_BYTES`",
    ),
  MQTT_MAX_OUTGOING_MESSAGES: int(1, 10_000_000)
    .default(1000)
    .describe("messages waiting to be written to one client, past which it is disconnected (`slow_consumer`)"),
  MQTT_MAX_VIOLATIONS: int(1, 1_000_000)
    .default(10)
    .describe("forbidden publishes after which a client is disconnected"),
  MQTT_FEEDBACK_INTERVAL_MS: int(10, 3_600_000)
    .default(1000)
    .describe(
      "an agent gets at most one feedback message per rejection reason per interval (after the first), with a `count`",
    ),
  MQTT_FEEDBACK_EXPIRY_SECONDS: int(1, 31_536_000)
    .default(3600)
    .describe(
      "MQTT 5: the Message Expiry Interval of feedback messages; one that waited longer in an agent's persistent session is not sent (3.1.1 has no expiry: a returning agent gets what waited, within its session's expiry)",
    ),
  MQTT_MAX_CONNECTION_RATE: int(1, 1_000_000)
    .default(500)
    .describe("new connections a second per listener; more wait their turn"),
  MQTT_CONNECTION_RATE_BURST: int(1, 1_000_000)
    .default(1000)
    .describe("new connections a listener takes at once above its rate"),
  MQTT_CONNECTION_MAX_WAIT_MS: int(0, 60_000)
    .default(5_000)
    .describe(
      "longest a new connection may wait for its CONNACK: its turn at the rate plus the handshakes ahead of it at that rate. One that would wait longer is refused at once with CONNACK 3 (MQTT 5: 0x9F connection rate exceeded), well inside a client's CONNACK timeout, and should retry after a random pause (devices.md)",
    ),
  MQTT_PRESENCE_LEASE_MS: int(3_000, 600_000)
    .default(30_000)
    .describe(
      "distributed mode: how long a connection counts against its tenant's quota (and shows as connected) without its broker re-asserting it, every third of this; a dead broker's connections are gone after it, a live broker's are back within a third of it after a Redis outage",
    ),
  MQTT_LISTEN_BACKLOG: int(1, 65_535)
    .default(4096)
    .describe(
      "TCP connections the kernel queues for each MQTT listener until the broker accepts them; the kernel caps it at `net.core.somaxconn` (limits.md). Short, a reconnect storm's handshakes are dropped and wait on TCP retransmission, unseen by the rate limit",
    ),
  MQTT_MAX_RETAINED_MESSAGES: int(0, 100_000_000).default(10_000).describe("retained messages held in all (`0`: none)"),
  MQTT_MAX_RETAINED_BYTES: int(0, 64 * 1024 * 1024 * 1024)
    .default(64 * 1024 * 1024)
    .describe("bytes of retained messages (topic + payload) held in all"),
  MQTT_MAX_RETAINED_MESSAGES_PER_PRINCIPAL: int(0, 100_000_000)
    .default(1000)
    .describe("retained messages of the admin, and of anonymous clients together"),
  MQTT_MAX_RETAINED_BYTES_PER_PRINCIPAL: int(0, 64 * 1024 * 1024 * 1024)
    .default(8 * 1024 * 1024)
    .describe("bytes of retained messages per principal"),
  AGENT_MAX_READINGS_PER_SECOND: int(1, MAX_INT32)
    .default(1000)
    .describe("readings per second per agent, MQTT and HTTP (overridable per tenant)"),
  AGENT_READINGS_BURST: int(1, MAX_INT32).default(5000).describe("readings an agent may send at once above its rate"),
  AGENT_MAX_BYTES_PER_SECOND: int(1, MAX_INT32)
    .default(1024 * 1024)
    .describe("payload bytes per second per agent"),
  AGENT_BYTES_BURST: int(1, MAX_INT32)
    .default(4 * 1024 * 1024)
    .describe("payload bytes an agent may send at once above its rate"),
  TENANT_MAX_READINGS_PER_SECOND: int(1, MAX_INT32)
    .default(20_000)
    .describe("readings per second of all a tenant's agents, across all processes"),
  TENANT_READINGS_BURST: int(1, MAX_INT32)
    .default(40_000)
    .describe("readings a tenant may send at once above its rate"),
  TENANT_MAX_CONNECTIONS: int(1, MAX_INT32)
    .default(1000)
    .describe("MQTT connections (agents and viewers) per tenant, across all brokers"),
  TENANT_LIMITS_CACHE_TTL_MS: int(0, 3_600_000)
    .default(5000)
    .describe("how long a tenant's limits are cached should a change announcement be lost"),
  MQTT_BATCH_MAX_MESSAGES: int(1, 100_000).default(500).describe("readings per submission before a batch is flushed"),
  MQTT_BATCH_LINGER_MS: int(0, 10_000)
    .default(3)
    .describe(
      "longest wait before a batch is flushed (the PUBACK waits for it: bench/README.md compares 5, 3, 2 and 1)",
    ),
  MQTT_MAX_PENDING_MESSAGES: int(1, 10_000_000)
    .default(50_000)
    .describe("readings accepted but not yet durable; past it the broker stops reading from sockets"),
  LOG_LEVEL: z
    .enum(["fatal", "error", "warn", "info", "debug", "trace", "silent"])
    .default("info")
    .describe("pino level: `fatal` … `trace`, `silent`"),
  // Unset: coloured lines on a terminal, JSON lines otherwise (a file, a pipe, a log collector).
  LOG_FORMAT: z
    .enum(["json", "pretty"], { error: 'must be "json" or "pretty"' })
    .optional()
    .describe(
      "`json` (one JSON object per line) or `pretty` (coloured lines, `pino-pretty` in a worker thread); unset: `pretty` when stdout is a terminal, `json` otherwise",
    ),
  SHUTDOWN_TIMEOUT_MS: int(1000, 3_600_000)
    .default(30_000)
    .describe(
      "how long a SIGTERM may take to finish in-flight work; past it the process exits 1 (unacknowledged publishes are resent by their clients, held jobs go to another worker)",
    ),
  MIGRATE_ON_START: bool.default(true).describe("apply pending migrations at start"),
  HTTP_BODY_LIMIT_BYTES: int(1024, 64 * 1024 * 1024)
    .default(1024 * 1024)
    .describe("largest request body"),
  MAX_BATCH_ITEMS: int(1, 100_000)
    .default(1000)
    .describe(
      "most readings in one JSON request or MQTT payload; most lines of line protocol or OTLP data points in one request or payload",
    ),
  LINE_PROTOCOL_MAX_FIELDS: int(1, 10_000)
    .default(200)
    .describe("most fields on one line of InfluxDB line protocol (each field is a reading)"),
  MAX_TAGS: int(0, 1000).default(32).describe("most tags on one metric"),
  MAX_TAG_LENGTH: int(1, 10_000).default(256).describe("longest tag name or value"),
  MAX_DEDUPE_ID_LENGTH: int(1, 1024).default(128).describe("longest `dedupe_id`"),
  MAX_FUTURE_SKEW_SECONDS: int(0, 10 * 365 * 86400)
    .default(86400)
    .describe("how far ahead of the server's clock a timestamp may be"),
  QUERY_MAX_LIMIT: int(1, 100_000).default(1000).describe("largest `limit` of a query page (default page: 100)"),
  SSE_HEARTBEAT_MS: int(100, 3_600_000).default(15_000).describe("heartbeat interval of live streams"),
  SSE_MAX_BUFFER_BYTES: int(1024, 1024 * 1024 * 1024)
    .default(1024 * 1024)
    .describe("unsent bytes after which a slow stream client is disconnected"),
  CREDENTIAL_CACHE_TTL_MS: int(0, 3_600_000).default(5000).describe("how long a credential lookup is cached"),
  WORKER_CONCURRENCY: int(1, 1024)
    .default(128)
    .describe(
      "jobs one worker process holds at once; it runs one statement at a time, and the jobs that wait meanwhile are stored together in the next (so a backlog drains many jobs a statement)",
    ),
  JOB_ATTEMPTS: int(1, 100).default(8).describe("attempts of a job before it stays in the failed set"),
  JOB_BACKOFF_MS: int(1, 3_600_000)
    .default(500)
    .describe("first retry delay (exponential), and first wait between database probes while it is down"),
  DATABASE_WAIT_MAX_MS: int(10, 3_600_000)
    .default(30_000)
    .describe("longest wait between database probes while it is down (jobs wait, none fails)"),
  JOB_LOCK_MS: int(1000, 3_600_000)
    .default(10_000)
    .describe("BullMQ job lock, renewed every half of it: a killed worker's jobs are handed on once it expires"),
  JOB_STALLED_CHECK_MS: int(500, 3_600_000).default(5000).describe("how often workers look for jobs whose worker died"),
  JOB_MAX_STALLED: int(1, 1000).default(5).describe("times a job may lose its worker before it goes to the failed set"),
  EMBEDDED_QUEUE_MAX_PENDING: int(1, 1_000_000)
    .default(256)
    .describe("embedded mode: submissions in flight before `503`"),
  QUEUE_MAX_DEPTH: int(1, 100_000_000)
    .default(20_000)
    .describe(
      "distributed mode: jobs waiting in the queue past which brokers stop acknowledging publishes and HTTP ingestion answers `503` until workers catch up",
    ),
  SUBMISSION_RETENTION_HOURS: int(1, 24 * 365)
    .default(168)
    .describe("how long applied submission ids are remembered against replays (whole partitions dropped after)"),
  METRICS_RETENTION_DAYS: int(1, 3650)
    .default(30)
    .describe(
      "how long readings are kept (by reading time): older partitions are dropped whole; an older reading is refused `too_old`",
    ),
  METRICS_PARTITION_HOURS: z.coerce
    .number()
    .refine((v) => [1, 2, 3, 4, 6, 8, 12, 24].includes(v), {
      error: "must be 1, 2, 3, 4, 6, 8, 12 or 24 (hours that divide a day)",
    })
    .default(24)
    .describe(
      "the time span of one partition of `metrics` (and of the dedupe and submission tables): 1, 2, 3, 4, 6, 8, 12 or 24. The insert writes into the current partitions, so their size, not the history, sets its cost: at a million readings a day, 6 held the insert at 30 M readings steadier (see bench/README.md), at the price of more dedupe partitions searched per reading",
    ),
  DEDUPE_WINDOW_HOURS: int(1, 24 * 365)
    .default(24)
    .describe("a `dedupe_id` arriving again within this long of its first arrival is stored once"),
  SERIES_MAX_POINTS: int(1, 1_000_000).default(10_000).describe("most buckets one series request may ask for"),
  REJECTION_HISTORY_MAX: int(1, 100_000)
    .default(1000)
    .describe(
      "refusals kept per tenant for the console and `GET /api/v1/rejections` (the newest). Distributed in Redis, embedded in memory",
    ),
  REJECTION_HISTORY_HOURS: int(1, 24 * 7)
    .default(24)
    .describe("how long a refusal is kept in that history"),
});

/** Every environment variable the service reads. */
export const CONFIG_VARIABLES = Object.keys(envSchema.shape);

/** The schema of each variable, for the generated reference (scripts/docs.ts). */
export const CONFIG_SCHEMA: Readonly<Record<ConfigVariable, z.ZodType>> = envSchema.shape;

export type ConfigVariable = keyof typeof envSchema.shape;

/** How the reference (docs/configuration.md, .env.example) groups the variables, in order. */
export const CONFIG_SECTIONS: readonly { title: string; variables: readonly ConfigVariable[] }[] = [
  {
    title: "Mode, backends and process",
    variables: [
      "DATA_DIR",
      "DATABASE_URL",
      "REDIS_URL",
      "REDIS_SENTINELS",
      "REDIS_SENTINEL_NAME",
      "REDIS_SENTINEL_PASSWORD",
      "REDIS_SENTINEL_TLS",
      "REDIS_TLS_CA_FILE",
      "REDIS_MIN_REPLICAS",
      "REDIS_REPLICA_TIMEOUT_MS",
      "REDIS_PREFIX",
      "REDIS_PERSISTENCE",
      "REDIS_CHECK_INTERVAL_MS",
      "REDIS_COMMAND_TIMEOUT_MS",
      "DATABASE_TIMEOUT_MS",
      "ADMIN_TOKEN",
      "ROLES",
      "LOG_LEVEL",
      "LOG_FORMAT",
      "SHUTDOWN_TIMEOUT_MS",
      "MIGRATE_ON_START",
    ],
  },
  { title: "HTTP", variables: ["HTTP_HOST", "HTTP_PORT"] },
  {
    title: "MQTT listeners",
    variables: [
      "MQTT_HOST",
      "MQTT_PORT",
      "MQTT_WS_PORT",
      "MQTT_TLS_PORT",
      "MQTT_WSS_PORT",
      "MQTT_TLS_CERT_FILE",
      "MQTT_TLS_KEY_FILE",
      "MQTT_TLS_CLIENT_AUTH",
      "MQTT_TLS_CIPHERS",
      "MQTT_ALLOW_ANONYMOUS",
    ],
  },
  {
    title: "MQTT connections and packets",
    variables: [
      "MQTT_MAX_CONNECTIONS",
      "MQTT_MAX_PACKET_BYTES",
      "MQTT_MAX_PAYLOAD_BYTES",
      "MQTT_TENANT_TURN_BYTES",
      "MQTT_MAX_TOPIC_LEVELS",
      "MQTT_MAX_CLIENT_ID_LENGTH",
      "MQTT_KEEPALIVE_LIMIT_SECONDS",
      "MQTT_RECEIVE_MAXIMUM",
      "MQTT_TOPIC_ALIAS_MAXIMUM",
      "MQTT_MAX_SESSION_EXPIRY_SECONDS",
      "MQTT_SHARED_MAX_INFLIGHT",
      "MQTT_SHARED_QUEUE_MAX_MESSAGES",
      "MQTT_CONNECT_TIMEOUT_MS",
      "MQTT_MAX_OUTGOING_BYTES",
      "MQTT_MAX_OUTGOING_MESSAGES",
      "MQTT_MAX_VIOLATIONS",
      "MQTT_FEEDBACK_INTERVAL_MS",
      "MQTT_FEEDBACK_EXPIRY_SECONDS",
      "MQTT_MAX_CONNECTION_RATE",
      "MQTT_CONNECTION_RATE_BURST",
      "MQTT_CONNECTION_MAX_WAIT_MS",
      "MQTT_LISTEN_BACKLOG",
      "MQTT_PRESENCE_LEASE_MS",
      "MQTT_MAX_RETAINED_MESSAGES",
      "MQTT_MAX_RETAINED_BYTES",
      "MQTT_MAX_RETAINED_MESSAGES_PER_PRINCIPAL",
      "MQTT_MAX_RETAINED_BYTES_PER_PRINCIPAL",
      "MQTT_BATCH_MAX_MESSAGES",
      "MQTT_BATCH_LINGER_MS",
      "MQTT_MAX_PENDING_MESSAGES",
    ],
  },
  {
    title: "Rates and quotas (every tenant's defaults; `edge-ingest tenant limits set` overrides one tenant's)",
    variables: [
      "AGENT_MAX_READINGS_PER_SECOND",
      "AGENT_READINGS_BURST",
      "AGENT_MAX_BYTES_PER_SECOND",
      "AGENT_BYTES_BURST",
      "TENANT_MAX_READINGS_PER_SECOND",
      "TENANT_READINGS_BURST",
      "TENANT_MAX_CONNECTIONS",
      "TENANT_LIMITS_CACHE_TTL_MS",
    ],
  },
  {
    title: "Readings and the HTTP API",
    variables: [
      "HTTP_BODY_LIMIT_BYTES",
      "MAX_BATCH_ITEMS",
      "LINE_PROTOCOL_MAX_FIELDS",
      "MAX_TAGS",
      "MAX_TAG_LENGTH",
      "MAX_DEDUPE_ID_LENGTH",
      "MAX_FUTURE_SKEW_SECONDS",
      "QUERY_MAX_LIMIT",
      "SERIES_MAX_POINTS",
      "REJECTION_HISTORY_MAX",
      "REJECTION_HISTORY_HOURS",
      "SSE_HEARTBEAT_MS",
      "SSE_MAX_BUFFER_BYTES",
      "CREDENTIAL_CACHE_TTL_MS",
    ],
  },
  {
    title: "Queue and worker",
    variables: [
      "WORKER_CONCURRENCY",
      "JOB_ATTEMPTS",
      "JOB_BACKOFF_MS",
      "DATABASE_WAIT_MAX_MS",
      "JOB_LOCK_MS",
      "JOB_STALLED_CHECK_MS",
      "JOB_MAX_STALLED",
      "EMBEDDED_QUEUE_MAX_PENDING",
      "QUEUE_MAX_DEPTH",
    ],
  },
  {
    title: "Storage",
    variables: [
      "METRICS_RETENTION_DAYS",
      "METRICS_PARTITION_HOURS",
      "DEDUPE_WINDOW_HOURS",
      "SUBMISSION_RETENTION_HOURS",
    ],
  },
];

export interface PayloadLimits {
  maxBatchItems: number;
  /** How old a reading may be: older ones are past the retention (`too_old`). */
  maxAgeMs: number;
  maxTags: number;
  maxTagLength: number;
  maxDedupeIdLength: number;
  maxFutureSkewMs: number;
  /** Most fields on one line of line protocol. */
  maxLineFields: number;
}

export type Config = Omit<
  z.output<typeof envSchema>,
  | "MAX_BATCH_ITEMS"
  | "MAX_TAGS"
  | "MAX_TAG_LENGTH"
  | "MAX_DEDUPE_ID_LENGTH"
  | "MAX_FUTURE_SKEW_SECONDS"
  | "LINE_PROTOCOL_MAX_FIELDS"
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
  const {
    MAX_BATCH_ITEMS,
    MAX_TAGS,
    MAX_TAG_LENGTH,
    MAX_DEDUPE_ID_LENGTH,
    MAX_FUTURE_SKEW_SECONDS,
    LINE_PROTOCOL_MAX_FIELDS,
    ...rest
  } = parsed.data;

  if (Boolean(rest.DATABASE_URL) !== Boolean(rest.REDIS_URL)) {
    const missing = rest.DATABASE_URL ? "REDIS_URL" : "DATABASE_URL";
    throw new ConfigError(
      `invalid configuration:\n  ${missing}: distributed mode needs both DATABASE_URL and REDIS_URL; set ${missing} or unset the other`,
    );
  }
  if (rest.REDIS_SENTINELS && !rest.REDIS_URL) {
    throw new ConfigError(
      "invalid configuration:\n  REDIS_URL: REDIS_SENTINELS needs REDIS_URL too (its password, database and scheme; e.g. redis://:password@primary/0)",
    );
  }
  if (rest.REDIS_MIN_REPLICAS > 0 && rest.REDIS_REPLICA_TIMEOUT_MS >= rest.REDIS_COMMAND_TIMEOUT_MS) {
    throw new ConfigError(
      `invalid configuration:\n  REDIS_REPLICA_TIMEOUT_MS: must be below REDIS_COMMAND_TIMEOUT_MS (${rest.REDIS_COMMAND_TIMEOUT_MS}), or a wait for replicas would count as a Redis that does not answer`,
    );
  }
  if (Boolean(rest.MQTT_TLS_CERT_FILE) !== Boolean(rest.MQTT_TLS_KEY_FILE)) {
    const missing = rest.MQTT_TLS_CERT_FILE ? "MQTT_TLS_KEY_FILE" : "MQTT_TLS_CERT_FILE";
    throw new ConfigError(
      `invalid configuration:\n  ${missing}: TLS needs both MQTT_TLS_CERT_FILE and MQTT_TLS_KEY_FILE`,
    );
  }
  if (rest.MQTT_TLS_CLIENT_AUTH !== "none" && !rest.MQTT_TLS_CERT_FILE) {
    throw new ConfigError(
      "invalid configuration:\n  MQTT_TLS_CLIENT_AUTH: client certificates need the TLS listeners: set MQTT_TLS_CERT_FILE and MQTT_TLS_KEY_FILE",
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
      maxLineFields: LINE_PROTOCOL_MAX_FIELDS,
    },
  };
}
