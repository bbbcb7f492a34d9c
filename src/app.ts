import { mkdir } from "node:fs/promises";
import type { AddressInfo } from "node:net";
import type { FastifyInstance } from "fastify";
import { Redis } from "ioredis";
import type { Logger } from "pino";
import { embeddedAdminToken } from "./admin-token.ts";
import { buildHttpServer } from "./api/server.ts";
import type { RunningBroker } from "./broker/broker.ts";
import type { Config } from "./config.ts";
import { Identifier } from "./credentials/identify.ts";
import { Revocations } from "./credentials/revocations.ts";
import { CredentialStore } from "./credentials/store.ts";
import { BullmqSubmissionQueue } from "./ingest/bullmq-queue.ts";
import { DepthGate } from "./ingest/depth-gate.ts";
import { InProcessQueue } from "./ingest/in-process-queue.ts";
import { Intake } from "./ingest/intake.ts";
import type { SubmissionQueue } from "./ingest/queue.ts";
import { RedisDurability } from "./ingest/redis-durability.ts";
import { TenantLimitsStore } from "./limits/limits-store.ts";
import { RateLimiter } from "./limits/rate-limiter.ts";
import { LocalTenantTokens, RedisTenantTokens } from "./limits/tenant-tokens.ts";
import { FanOut } from "./live/fanout.ts";
import { LiveRejections } from "./live/rejections.ts";
import { rateLimitedLog } from "./logger.ts";
import { LocalPresence, RedisPresence } from "./presence/presence.ts";
import { createPubSub } from "./pubsub.ts";
import { AgentDirectory } from "./store/agents.ts";
import { openDatabase } from "./store/database.ts";
import { MetricStore } from "./store/metrics.ts";
import { maintainPartitions } from "./store/partitions.ts";
import { createTelemetry } from "./telemetry/metrics.ts";
import { createProcessor } from "./worker/processor.ts";

export interface RunningApp {
  /** Base URL of the HTTP server (probes and metrics; the API too with the `api` role). */
  httpUrl: string;
  /** The HTTP server itself, whose routes the OpenAPI document must all list. */
  http: FastifyInstance;
  /** Bound MQTT ports, when this process runs the `broker` role. */
  mqttPorts?: RunningBroker["ports"];
  /** Stops taking work, finishes what is in flight, then closes every backend. Idempotent. */
  close(): Promise<void>;
  /** While closing: the part it waits for now. */
  closingStep(): string | undefined;
}

/** How often partitions are created ahead and dropped past retention. */
const MAINTENANCE_INTERVAL_MS = 60 * 60 * 1000;
/** The process cannot start as configured; the message says what to change. */
export class StartupError extends Error {
  override name = "StartupError";
}

/** How often the shared queue's depth is sampled for the depth gate. */
const DEPTH_SAMPLE_MS = 250;

/** Assembles the process: backends for the mode, then the roles asked for, in dependency order. */
export async function startApp(config: Config, logger: Logger): Promise<RunningApp> {
  // Closed in reverse order of opening: roles first, backends last.
  const closers: { name: string; close: () => Promise<void> }[] = [];
  /** What closing is waiting for, for a shutdown that takes too long to say. */
  let closingStep: string | undefined;
  const close = async () => {
    for (let closer = closers.pop(); closer; closer = closers.pop()) {
      closingStep = closer.name;
      const started = Date.now();
      await closer.close();
      logger.debug({ step: closer.name, ms: Date.now() - started }, "stopped");
    }
    closingStep = undefined;
  };
  try {
    const distributed = config.mode === "distributed";
    if (!distributed) await mkdir(config.DATA_DIR, { recursive: true });

    const db = await openDatabase(config.DATABASE_URL ? { url: config.DATABASE_URL } : { dataDir: config.DATA_DIR }, {
      migrate: config.MIGRATE_ON_START,
      logger,
    });
    closers.push({ name: "database", close: () => db.close() });

    const telemetry = createTelemetry();
    const pubsub = createPubSub(config.REDIS_URL, config.REDIS_PREFIX, logger);
    closers.push({ name: "pub/sub", close: () => pubsub.close() });
    const fanout = new FanOut(pubsub);
    const rejections = new LiveRejections(pubsub);
    const revocations = new Revocations(pubsub);
    const credentials = new CredentialStore(db, config.CREDENTIAL_CACHE_TTL_MS);
    await revocations.onRevoked((username) => credentials.forget(username));

    // Budgets shared by every process of a distributed deployment (tenant rates, connections, retained messages).
    let coordination: Redis | undefined;
    /** Readiness checks beyond the database and the queue, by name. */
    const readiness: Record<string, () => Promise<void>> = {};
    if (config.REDIS_URL) {
      const redis = new Redis(config.REDIS_URL, { enableAutoPipelining: true, maxRetriesPerRequest: 1 });
      const logRedisError = rateLimitedLog(logger, 5, 60_000);
      redis.on("error", (error: Error) => logRedisError({ err: error }, "coordination Redis connection error"));
      closers.push({ name: "coordination Redis", close: async () => redis.disconnect() });
      coordination = redis;
      // Acknowledged means Redis has the job: a Redis that could lose it is refused at start.
      const durability = new RedisDurability(redis, config.REDIS_PERSISTENCE, telemetry, logger);
      const report = await durability.check();
      if (report.problems.length > 0) throw new StartupError(report.problems.join("\n  "));
      for (const warning of report.warnings) logger.warn(warning);
      durability.watch(config.REDIS_CHECK_INTERVAL_MS);
      closers.push({ name: "Redis durability check", close: async () => durability.close() });
      readiness.redis = durability.readiness;
    }
    const tenantLimits = await TenantLimitsStore.open(
      db,
      config.tenantLimits,
      config.TENANT_LIMITS_CACHE_TTL_MS,
      pubsub,
    );
    const logLeaseError = rateLimitedLog(logger, 5, 60_000);
    const limiter = new RateLimiter(
      tenantLimits,
      coordination ? new RedisTenantTokens(coordination, config.REDIS_PREFIX) : new LocalTenantTokens(),
      (error) =>
        logLeaseError({ err: error }, "cannot lease a tenant's rate budget; its tenant limit is lifted meanwhile"),
    );
    closers.push({ name: "rate limiter", close: async () => limiter.close() });
    const logPresenceError = rateLimitedLog(logger, 5, 60_000);
    const presence = coordination
      ? new RedisPresence(coordination, config.REDIS_PREFIX, (error) =>
          logPresenceError({ err: error }, "cannot renew this broker's connections in Redis"),
        )
      : new LocalPresence();
    closers.push({ name: "presence", close: async () => presence.close() });
    const metrics = new MetricStore(db.sql, config.DEDUPE_WINDOW_HOURS * 3_600_000);
    const process = createProcessor({ metrics, fanout, telemetry, logger });

    let queue: SubmissionQueue;
    if (config.REDIS_URL) {
      queue = await BullmqSubmissionQueue.open({
        redisUrl: config.REDIS_URL,
        prefix: config.REDIS_PREFIX,
        attempts: config.JOB_ATTEMPTS,
        backoffMs: config.JOB_BACKOFF_MS,
        logger,
      });
    } else {
      queue = new InProcessQueue(process, config.EMBEDDED_QUEUE_MAX_PENDING);
    }
    closers.push({ name: "queue", close: () => queue.close() });
    telemetry.setQueueSources({ depth: () => queue.depth(), failed: async () => (await queue.failedJobs(0)).count });
    const logDepthError = rateLimitedLog(logger, 5, 60_000);
    // In-process queues are bounded by themselves; a shared one is bounded by its depth.
    const depthGate =
      queue.backend === "bullmq" && (config.ROLES.has("broker") || config.ROLES.has("api"))
        ? new DepthGate(
            () => queue.depth(),
            config.QUEUE_MAX_DEPTH,
            DEPTH_SAMPLE_MS,
            (error) => logDepthError({ reason: error.message }, "cannot read the queue depth"),
          )
        : undefined;
    const intake = new Intake(queue, telemetry, depthGate);
    closers.push({ name: "intake", close: async () => intake.close() });

    if (config.ROLES.has("worker")) {
      // Partitions for what the worker will write exist before it writes (and old ones go), then hourly.
      const retention = {
        partitionHours: config.METRICS_PARTITION_HOURS,
        metricsRetentionDays: config.METRICS_RETENTION_DAYS,
        futureSkewMs: config.payloadLimits.maxFutureSkewMs,
        dedupeWindowHours: config.DEDUPE_WINDOW_HOURS,
        submissionRetentionHours: config.SUBMISSION_RETENTION_HOURS,
      };
      const maintain = () => db.withSession((session) => maintainPartitions(session, retention, logger));
      await maintain();
      const logMaintenanceError = rateLimitedLog(logger, 1, MAINTENANCE_INTERVAL_MS);
      const maintainOrLog = () =>
        maintain().catch((error: Error) =>
          logMaintenanceError({ reason: error.message }, "partition maintenance failed"),
        );
      const maintenance = setInterval(() => void maintainOrLog(), MAINTENANCE_INTERVAL_MS).unref();
      closers.push({ name: "partition maintenance", close: async () => clearInterval(maintenance) });
      if (config.REDIS_URL) {
        const { startBullmqWorker } = await import("./worker/bullmq-worker.ts");
        const worker = await startBullmqWorker({
          redisUrl: config.REDIS_URL,
          prefix: config.REDIS_PREFIX,
          concurrency: config.WORKER_CONCURRENCY,
          process,
          // Back from an outage, the partitions are brought up to date before the waiting jobs go on:
          // arrivals after the last partition made before a long outage would have none.
          probeDatabase: async () => {
            await db.ping();
            await maintainOrLog();
          },
          backoffMs: config.JOB_BACKOFF_MS,
          maxBackoffMs: config.DATABASE_WAIT_MAX_MS,
          lockMs: config.JOB_LOCK_MS,
          stalledCheckMs: config.JOB_STALLED_CHECK_MS,
          maxStalled: config.JOB_MAX_STALLED,
          telemetry,
          logger,
        });
        closers.push({ name: "worker (jobs in flight)", close: () => worker.close() });
      }
    }

    const adminToken = distributed ? config.ADMIN_TOKEN : await embeddedAdminToken(config.DATA_DIR, config.ADMIN_TOKEN);
    const identifier = new Identifier(credentials, adminToken);

    let mqttPorts: RunningBroker["ports"] | undefined;
    const retainedLimits = {
      maxMessages: config.MQTT_MAX_RETAINED_MESSAGES,
      maxBytes: config.MQTT_MAX_RETAINED_BYTES,
      maxMessagesPerPrincipal: config.MQTT_MAX_RETAINED_MESSAGES_PER_PRINCIPAL,
      maxBytesPerPrincipal: config.MQTT_MAX_RETAINED_BYTES_PER_PRINCIPAL,
    };
    if (config.ROLES.has("broker")) {
      const { startBroker } = await import("./broker/broker.ts");
      const { LocalRetainedLedger, RedisRetainedLedger } = await import("./broker/retained-quota.ts");
      const broker = await startBroker({
        config,
        logger,
        identifier,
        revocations,
        intake,
        fanout,
        rejections,
        telemetry,
        limiter,
        tenantLimits,
        presence,
        retained: coordination
          ? new RedisRetainedLedger(coordination, config.REDIS_PREFIX, retainedLimits)
          : new LocalRetainedLedger(retainedLimits),
      });
      closers.push({ name: "broker (pending acknowledgements)", close: () => broker.close() });
      mqttPorts = broker.ports;
    }

    // Every process answers probes and scrapes; only the api role serves the API and the console.
    const http = await buildHttpServer({
      config,
      logger,
      telemetry,
      checks: { database: () => db.ping(), queue: () => queue.ping(), ...readiness },
      mqttPorts: { port: mqttPorts?.tcp ?? config.MQTT_PORT, ws_port: mqttPorts?.ws ?? config.MQTT_WS_PORT },
      api: config.ROLES.has("api")
        ? {
            metrics,
            agents: new AgentDirectory(db.sql),
            credentials,
            identifier,
            revocations,
            intake,
            queue,
            fanout,
            rejections,
            limiter,
            tenantLimits,
            presence,
          }
        : undefined,
    });
    await http.listen({ host: config.HTTP_HOST, port: config.HTTP_PORT });
    closers.push({ name: "HTTP server (requests in flight)", close: () => http.close() });
    const { port } = http.server.address() as AddressInfo;
    const host = config.HTTP_HOST === "0.0.0.0" || config.HTTP_HOST === "::" ? "127.0.0.1" : config.HTTP_HOST;
    const httpUrl = `http://${host.includes(":") ? `[${host}]` : host}:${port}`;

    logger.info(
      {
        mode: config.mode,
        roles: [...config.ROLES],
        database: db.backend,
        queue: queue.backend,
        fanout: fanout.backend,
        http: httpUrl,
        mqtt: mqttPorts,
      },
      `edge-ingest started (${config.mode}: database ${db.backend}, queue ${queue.backend}, fan-out ${fanout.backend})`,
    );
    let closing: Promise<void> | undefined;
    return { httpUrl, http, mqttPorts, close: () => (closing ??= close()), closingStep: () => closingStep };
  } catch (error) {
    await close();
    throw error;
  }
}
