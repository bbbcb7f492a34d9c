import { mkdir, readFile } from "node:fs/promises";
import type { Logger } from "pino";
import { embeddedAdminToken } from "./admin-token.ts";
import type { ReadinessCheck } from "./api/routes/health.ts";
import type { RetainedLedger, RetainedLimits } from "./broker/retained-quota.ts";
import { LocalSessionExpiry, RedisSessionExpiry, type SessionExpiryStore } from "./broker/session-expiry.ts";
import { LocalSharedQueue, type SharedQueue } from "./broker/shared/queue.ts";
import { RedisSharedQueue } from "./broker/shared/redis-queue.ts";
import type { BrokerState } from "./broker/shared-state.ts";
import type { Config } from "./config.ts";
import { StartupError } from "./errors.ts";
import { BullmqSubmissionQueue } from "./ingest/bullmq-queue.ts";
import { InProcessQueue } from "./ingest/in-process-queue.ts";
import type { SubmissionProcessor, SubmissionQueue } from "./ingest/queue.ts";
import { RedisDurability } from "./ingest/redis-durability.ts";
import { LocalTenantTokens, RedisTenantTokens, type TenantTokenSource } from "./limits/tenant-tokens.ts";
import { LocalRejectionHistory, RedisRejectionHistory, type RejectionHistory } from "./live/rejection-history.ts";
import { rateLimitedLog } from "./logger.ts";
import { LocalPresence, type Presence, RedisPresence } from "./presence/presence.ts";
import { LocalPubSub, type PubSub, RedisPubSub } from "./pubsub.ts";
import { connectToServer, type RedisTarget, redisConnector } from "./redis/connection.ts";
import type { ShutdownSteps } from "./shutdown.ts";
import { type Database, openDatabase } from "./store/database.ts";
import type { Telemetry } from "./telemetry/prometheus.ts";
import type { WorkerOptions } from "./worker/bullmq-worker.ts";

/** What a worker needs from the app to drain the shared queue (the rest comes from the backends). */
export type SharedQueueWorker = Omit<WorkerOptions, "connect" | "prefix">;

/**
 * Every backend whose kind depends on the mode, built once for it (embedded: in this process and
 * PGlite; distributed: PostgreSQL and Redis, shared by every process of the deployment). The roles
 * above them run the same code in both modes.
 */
export interface Backends {
  readonly mode: Config["mode"];
  readonly db: Database;
  /** Live fan-out, revocations and limit changes between processes. */
  readonly pubsub: PubSub;
  /** Which MQTT connections each tenant holds (its connection quota), on every broker. */
  readonly presence: Presence;
  /** Tenant rate budgets. */
  readonly tenantTokens: TenantTokenSource;
  readonly adminToken: string | undefined;
  /** Readiness checks beyond the database and the queue, by name. */
  readonly readiness: Record<string, ReadinessCheck>;
  /** When persistent sessions of disconnected clients end. */
  readonly sessionExpiry: SessionExpiryStore;
  /** Shared-subscription groups and the messages they hold, for every broker and worker. */
  readonly sharedQueue: SharedQueue;
  /** Each tenant's recent refusals, for its console. */
  readonly rejectionHistory: RejectionHistory;
  /** The retained-message account (`MQTT_MAX_RETAINED_*`). */
  retainedLedger(limits: RetainedLimits): Promise<RetainedLedger>;
  /** Where submissions go; `submit` resolves once durable. Embedded, it runs `process` itself. */
  openQueue(process: SubmissionProcessor): Promise<SubmissionQueue>;
  /** Distributed only: a worker draining the shared queue. Embedded, the queue is its own worker. */
  startWorker?(options: SharedQueueWorker): Promise<{ close(): Promise<void> }>;
  /** Sessions, retained messages and routing of the broker role. */
  brokerState(): Promise<BrokerState>;
}

/** Builds the backends of the configured mode; each is closed by `steps`, after the roles. */
export function openBackends(
  config: Config,
  telemetry: Telemetry,
  logger: Logger,
  steps: ShutdownSteps,
): Promise<Backends> {
  return config.REDIS_URL && config.DATABASE_URL
    ? openDistributed(config, config.REDIS_URL, config.DATABASE_URL, telemetry, logger, steps)
    : openEmbedded(config, logger, steps);
}

const rejectionHistoryLimits = (config: Config) => ({
  maxPerTenant: config.REJECTION_HISTORY_MAX,
  windowMs: config.REJECTION_HISTORY_HOURS * 3_600_000,
});

async function openEmbedded(config: Config, logger: Logger, steps: ShutdownSteps): Promise<Backends> {
  await mkdir(config.DATA_DIR, { recursive: true });
  const db = await openDatabase({ dataDir: config.DATA_DIR }, { migrate: config.MIGRATE_ON_START, logger });
  steps.add("database", () => db.close());
  const pubsub = new LocalPubSub();
  steps.add("pub/sub", () => pubsub.close());
  const presence = new LocalPresence();
  steps.add("presence", async () => presence.close());
  return {
    mode: "embedded",
    db,
    pubsub,
    presence,
    tenantTokens: new LocalTenantTokens(),
    sessionExpiry: new LocalSessionExpiry(),
    sharedQueue: new LocalSharedQueue(pubsub, config.MQTT_SHARED_QUEUE_MAX_MESSAGES),
    rejectionHistory: new LocalRejectionHistory(rejectionHistoryLimits(config)),
    adminToken: await embeddedAdminToken(config.DATA_DIR, config.ADMIN_TOKEN),
    readiness: {},
    retainedLedger: async (limits) => {
      const { LocalRetainedLedger } = await import("./broker/retained-quota.ts");
      return new LocalRetainedLedger(limits);
    },
    openQueue: async (process) => {
      const queue = new InProcessQueue(process, config.EMBEDDED_QUEUE_MAX_PENDING);
      steps.add("queue", () => queue.close());
      return queue;
    },
    brokerState: async () => ({ options: {}, close: async () => {} }),
  };
}

async function readTlsCa(file: string): Promise<string> {
  return readFile(file, "utf8").catch((error: Error) => {
    throw new StartupError(`REDIS_TLS_CA_FILE: cannot read ${file}: ${error.message}`);
  });
}

async function openDistributed(
  config: Config,
  redisUrl: string,
  databaseUrl: string,
  telemetry: Telemetry,
  logger: Logger,
  steps: ShutdownSteps,
): Promise<Backends> {
  const prefix = config.REDIS_PREFIX;
  const db = await openDatabase(
    { url: databaseUrl, timeoutMs: config.DATABASE_TIMEOUT_MS },
    { migrate: config.MIGRATE_ON_START, logger },
  );
  steps.add("database", () => db.close());
  const commandTimeout = config.REDIS_COMMAND_TIMEOUT_MS;
  const target: RedisTarget = {
    url: redisUrl,
    sentinels: config.REDIS_SENTINELS,
    sentinelName: config.REDIS_SENTINEL_NAME,
    sentinelPassword: config.REDIS_SENTINEL_PASSWORD,
    sentinelTls: config.REDIS_SENTINEL_TLS,
    tlsCa: config.REDIS_TLS_CA_FILE && (await readTlsCa(config.REDIS_TLS_CA_FILE)),
  };
  const connect = redisConnector(target);
  const pubsub = new RedisPubSub(connect, prefix, logger, commandTimeout);
  steps.add("pub/sub", () => pubsub.close());

  // Budgets shared by every process (tenant rates, connections, retained messages).
  const coordination = connect("coordination", { enableAutoPipelining: true, maxRetriesPerRequest: 1, commandTimeout });
  const logRedisError = rateLimitedLog(logger, 5, 60_000);
  coordination.on("error", (error: Error) => logRedisError({ err: error }, "coordination Redis connection error"));
  steps.add("coordination Redis", async () => coordination.disconnect());
  // Acknowledged means Redis has the job: a Redis that could lose it is refused at start.
  const replicaCheck = config.REDIS_MIN_REPLICAS > 0 && {
    min: config.REDIS_MIN_REPLICAS,
    connect: (address: { host: string; port: number }) =>
      connectToServer(target, address, "replica-check", {
        retryStrategy: () => null,
        maxRetriesPerRequest: 0,
        connectTimeout: commandTimeout,
        commandTimeout,
      }),
  };
  const durability = new RedisDurability(
    coordination,
    config.REDIS_PERSISTENCE,
    telemetry,
    logger,
    replicaCheck || undefined,
  );
  const report = await durability.check();
  if (report.problems.length > 0) throw new StartupError(report.problems.join("\n  "));
  for (const warning of report.warnings) logger.warn(warning);
  durability.watch(config.REDIS_CHECK_INTERVAL_MS);
  steps.add("Redis durability check", async () => durability.close());

  const logPresenceError = rateLimitedLog(logger, 5, 60_000);
  const presence = new RedisPresence(coordination, prefix, config.MQTT_PRESENCE_LEASE_MS, (error) =>
    logPresenceError({ err: error }, "cannot renew this broker's connections in Redis"),
  );
  steps.add("presence", async () => presence.close());
  return {
    mode: "distributed",
    db,
    pubsub,
    presence,
    tenantTokens: new RedisTenantTokens(coordination, prefix),
    sessionExpiry: new RedisSessionExpiry(coordination, prefix),
    sharedQueue: new RedisSharedQueue(coordination, prefix, pubsub, config.MQTT_SHARED_QUEUE_MAX_MESSAGES),
    rejectionHistory: new RedisRejectionHistory(coordination, prefix, rejectionHistoryLimits(config)),
    adminToken: config.ADMIN_TOKEN,
    readiness: { redis: durability.readiness },
    retainedLedger: async (limits) => {
      const { RedisRetainedLedger } = await import("./broker/retained-quota.ts");
      return new RedisRetainedLedger(coordination, prefix, limits);
    },
    openQueue: async () => {
      const queue = await BullmqSubmissionQueue.open({
        connect,
        prefix,
        attempts: config.JOB_ATTEMPTS,
        backoffMs: config.JOB_BACKOFF_MS,
        commandTimeoutMs: commandTimeout,
        minReplicas: config.REDIS_MIN_REPLICAS,
        replicaTimeoutMs: config.REDIS_REPLICA_TIMEOUT_MS,
        logger,
      });
      steps.add("queue", () => queue.close());
      return queue;
    },
    startWorker: async (options) => {
      const { startBullmqWorker } = await import("./worker/bullmq-worker.ts");
      const worker = await startBullmqWorker({ ...options, connect, prefix });
      steps.add("worker (jobs in flight)", () => worker.close());
      return worker;
    },
    brokerState: async () => {
      const { redisBrokerState } = await import("./broker/shared-state.ts");
      return redisBrokerState(connect, prefix, logger);
    },
  };
}
