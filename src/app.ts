import type { AddressInfo } from "node:net";
import type { FastifyInstance } from "fastify";
import type { Logger } from "pino";
import { buildHttpServer } from "./api/server.ts";
import { openBackends } from "./backends.ts";
import type { RunningBroker } from "./broker/broker.ts";
import type { Config } from "./config.ts";
import { TenantAuthorities } from "./credentials/authorities.ts";
import { isAuthorityUsername } from "./credentials/certificates.ts";
import { Identifier } from "./credentials/identify.ts";
import { Revocations } from "./credentials/revocations.ts";
import { CredentialStore } from "./credentials/store.ts";
import { DepthGate } from "./ingest/depth-gate.ts";
import { Intake } from "./ingest/intake.ts";
import { TenantLimitsStore } from "./limits/limits-store.ts";
import { RateLimiter } from "./limits/rate-limiter.ts";
import { FanOut } from "./live/fanout.ts";
import { LiveRejections } from "./live/rejections.ts";
import { rateLimitedLog } from "./logger.ts";
import { ShutdownSteps } from "./shutdown.ts";
import { AgentDirectory } from "./store/agents.ts";
import { maintainPartitions } from "./store/partitions.ts";
import { ReadingStore } from "./store/readings.ts";
import { createTelemetry } from "./telemetry/prometheus.ts";
import { StallWatch } from "./telemetry/stall-watch.ts";
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
  /** Reads the MQTT TLS listeners' certificate and key files again; nothing without the broker role. */
  reloadCertificates(): Promise<void>;
  /** While closing: the part it waits for now. */
  closingStep(): string | undefined;
}

/** How often partitions are created ahead and dropped past retention. */
const MAINTENANCE_INTERVAL_MS = 60 * 60 * 1000;

/** How long requests in flight may take to finish once the HTTP server closes. */
const HTTP_CLOSE_GRACE_MS = 5000;

/** How long work waits on a dependency before it is logged as held (and counted in `edge_ingest_held`). */
const HOLD_NOTICE_MS = 2000;

/** How often the shared queue's depth is sampled for the depth gate. */
const DEPTH_SAMPLE_MS = 250;

/**
 * Assembles the process: the backends of the mode (src/backends.ts, decided there once), then the
 * roles asked for, in dependency order. Everything here runs alike in both modes.
 */
export async function startApp(config: Config, logger: Logger): Promise<RunningApp> {
  const steps = new ShutdownSteps(logger);
  try {
    const telemetry = createTelemetry();
    const backends = await openBackends(config, telemetry, logger, steps);
    const { db, pubsub, presence } = backends;
    const fanout = new FanOut(pubsub);
    const rejections = new LiveRejections(pubsub, backends.rejectionHistory);
    const credentials = new CredentialStore(db, config.CREDENTIAL_CACHE_TTL_MS);
    const authorities = new TenantAuthorities(db, config.CREDENTIAL_CACHE_TTL_MS);
    const revocations = new Revocations(
      pubsub,
      async (since) => [...(await credentials.revokedSince(since)), ...(await authorities.removedSince(since))],
      (error) => logger.warn({ err: error }, "cannot ask which credentials were revoked while Pub/Sub was away"),
    );
    await revocations.onRevoked((username) => {
      credentials.forget(username);
      if (isAuthorityUsername(username)) authorities.forget();
    });

    const tenantLimits = await TenantLimitsStore.open(
      db,
      config.tenantLimits,
      config.TENANT_LIMITS_CACHE_TTL_MS,
      pubsub,
    );
    const logLeaseError = rateLimitedLog(logger, 5, 60_000);
    const limiter = new RateLimiter(tenantLimits, backends.tenantTokens, (error) =>
      logLeaseError({ err: error }, "cannot lease a tenant's rate budget; its tenant limit is lifted meanwhile"),
    );
    steps.add("rate limiter", async () => limiter.close());
    const readings = new ReadingStore(db.sql, config.DEDUPE_WINDOW_HOURS * 3_600_000);
    const processSubmission = createProcessor({
      readings,
      fanout,
      shared: backends.sharedQueue,
      telemetry,
      logger,
    });

    const queue = await backends.openQueue(processSubmission);
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
    const acknowledgements = new StallWatch("acknowledgements", HOLD_NOTICE_MS, logger);
    telemetry.watchHolds("acknowledgement", acknowledgements);
    const intake = new Intake(queue, telemetry, acknowledgements, depthGate);
    steps.add("intake", async () => {
      intake.close();
      acknowledgements.close();
    });

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
      steps.add("partition maintenance", async () => clearInterval(maintenance));
      const storage = new StallWatch("storage", HOLD_NOTICE_MS, logger);
      telemetry.watchHolds("storage", storage);
      steps.add("storage watch", async () => storage.close());
      await backends.startWorker?.({
        storage,
        concurrency: config.WORKER_CONCURRENCY,
        process: processSubmission,
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
    }

    const identifier = new Identifier(credentials, backends.adminToken, authorities);

    let mqttPorts: RunningBroker["ports"] | undefined;
    let reloadCertificates: RunningApp["reloadCertificates"] = async () => undefined;
    // Every process answers probes and scrapes; only the api role serves the API and the console.
    // Built before the MQTT listeners open, as building its routes keeps the event loop busy for a
    // while: after a broker restart its whole fleet connects at once, and connections the loop does
    // not accept meanwhile fill the kernel's accept queue.
    const http = await buildHttpServer({
      config,
      logger,
      telemetry,
      checks: { database: () => db.ping(), queue: () => queue.ping(), ...backends.readiness },
      mqttPorts: () => ({ port: mqttPorts?.tcp ?? config.MQTT_PORT, ws_port: mqttPorts?.ws ?? config.MQTT_WS_PORT }),
      api: config.ROLES.has("api")
        ? {
            readings,
            agents: new AgentDirectory(db.sql),
            credentials,
            authorities,
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
    if (config.ROLES.has("broker")) {
      const { startBroker } = await import("./broker/broker.ts");
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
        retained: await backends.retainedLedger({
          maxMessages: config.MQTT_MAX_RETAINED_MESSAGES,
          maxBytes: config.MQTT_MAX_RETAINED_BYTES,
          maxMessagesPerPrincipal: config.MQTT_MAX_RETAINED_MESSAGES_PER_PRINCIPAL,
          maxBytesPerPrincipal: config.MQTT_MAX_RETAINED_BYTES_PER_PRINCIPAL,
        }),
        state: await backends.brokerState(),
        sessionExpiry: backends.sessionExpiry,
        sharedQueue: backends.sharedQueue,
      });
      steps.add("broker (pending acknowledgements)", () => broker.close());
      mqttPorts = broker.ports;
      reloadCertificates = () => broker.reloadCertificate();
    }

    await http.listen({ host: config.HTTP_HOST, port: config.HTTP_PORT });
    steps.add("HTTP server (requests in flight)", async () => {
      // Requests in flight get a grace period; then what a client still holds open (a response it
      // does not read) is cut, so no client can hold the shutdown. A 202 is only sent once durable.
      const cut = setTimeout(() => http.server.closeAllConnections(), HTTP_CLOSE_GRACE_MS).unref();
      await http.close();
      clearTimeout(cut);
    });
    const { port } = http.server.address() as AddressInfo;
    const host = config.HTTP_HOST === "0.0.0.0" || config.HTTP_HOST === "::" ? "127.0.0.1" : config.HTTP_HOST;
    const httpUrl = `http://${host.includes(":") ? `[${host}]` : host}:${port}`;

    logger.info(
      {
        mode: backends.mode,
        roles: [...config.ROLES],
        database: db.backend,
        queue: queue.backend,
        fanout: fanout.backend,
        http: httpUrl,
        mqtt: mqttPorts,
      },
      `edge-ingest started (${backends.mode}: database ${db.backend}, queue ${queue.backend}, fan-out ${fanout.backend})`,
    );
    let closing: Promise<void> | undefined;
    return {
      httpUrl,
      http,
      mqttPorts,
      close: () => (closing ??= steps.closeAll()),
      closingStep: () => steps.closing,
      reloadCertificates: () => reloadCertificates(),
    };
  } catch (error) {
    await steps.closeAll();
    throw error;
  }
}
