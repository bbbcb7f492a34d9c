import { Aedes, type Client, type PublishPacket } from "aedes";
import aedesPersistenceRedis from "aedes-persistence-redis";
import { Redis } from "ioredis";
import mqemitter from "mqemitter";
import mqemitterRedis from "mqemitter-redis";
import type { Logger } from "pino";
import type { Config } from "../config.ts";
import type { Revocations } from "../credentials/revocations.ts";
import type { CredentialStore } from "../credentials/store.ts";
import { SubmissionBatcher } from "../ingest/batcher.ts";
import { DepthGate } from "../ingest/depth-gate.ts";
import type { SubmissionQueue } from "../ingest/queue.ts";
import type { Telemetry } from "../telemetry/metrics.ts";
import type { FanOut } from "../worker/fanout.ts";
import { feedbackTopic } from "./access.ts";
import { MetricsLocalEmitter } from "./emitter.ts";
import { createHooks, DISCARD_TOPIC } from "./hooks.ts";
import { type Listeners, startListeners } from "./listeners.ts";
import { attachViewerFeed } from "./viewer-feed.ts";

/** How often a broker samples the shared queue's depth. */
const DEPTH_SAMPLE_MS = 250;

export interface BrokerDeps {
  config: Config;
  logger: Logger;
  credentials: CredentialStore;
  revocations: Revocations;
  queue: SubmissionQueue;
  fanout: FanOut;
  telemetry: Telemetry;
  adminToken: string | undefined;
}

export interface RunningBroker {
  ports: Listeners["ports"];
  /**
   * Stops accepting connections and new publishes, flushes pending batches and waits for their
   * acknowledgements, then closes every client.
   */
  close(): Promise<void>;
}

/** Shared state across broker processes in distributed mode; in memory otherwise. */
function brokerBackends(config: Config, logger: Logger) {
  if (!config.REDIS_URL) return { options: {}, close: async () => {} };
  // Keys go under REDIS_PREFIX; mqemitter-redis names its channels after MQTT topics (no prefix).
  const persistenceConnection = new Redis(config.REDIS_URL, { keyPrefix: `${config.REDIS_PREFIX}:mqtt:` });
  persistenceConnection.on("error", (error: Error) => logger.warn({ err: error }, "broker persistence Redis error"));
  const persistence = aedesPersistenceRedis({ conn: persistenceConnection });
  const pubConn = new Redis(config.REDIS_URL, { enableAutoPipelining: true });
  const subConn = new Redis(config.REDIS_URL);
  // mqemitter-redis bundles its own ioredis major; it only calls methods both majors have.
  const shared = mqemitterRedis({ pubConn, subConn } as unknown as Parameters<typeof mqemitterRedis>[0]);
  // It re-emits its connections' errors here; without a listener they would crash the process.
  shared.state.on("error", (error: Error) => logger.warn({ err: error }, "broker emitter Redis error"));
  const closeShared = () => {
    pubConn.disconnect();
    subConn.disconnect();
  };
  return {
    options: { persistence, mq: new MetricsLocalEmitter(mqemitter(), shared, closeShared) },
    close: async () => {
      await persistence.destroy();
    },
  };
}

/**
 * After acknowledging a publish Aedes routes it; a discarded one has nowhere to go, so it skips
 * the routing work (packet copy, emitter, offline-session lookup) on the hot path.
 */
function skipDiscardedPublishes(broker: Aedes): void {
  // At run time Aedes calls publish(packet, client, done) as well as the typed publish(packet, done).
  type Publish = (packet: PublishPacket, client: unknown, done?: (error?: Error) => void) => void;
  const publish = (broker.publish as unknown as Publish).bind(broker);
  const skipping: Publish = (packet, client, done) => {
    if (packet.topic !== DISCARD_TOPIC) return publish(packet, client, done);
    const callback = typeof client === "function" ? (client as (error?: Error) => void) : done;
    callback?.();
  };
  broker.publish = skipping as unknown as Aedes["publish"];
}

export async function startBroker(deps: BrokerDeps): Promise<RunningBroker> {
  const { config, logger, telemetry } = deps;
  if (config.MQTT_ALLOW_ANONYMOUS) {
    logger.warn("MQTT_ALLOW_ANONYMOUS=true: clients without credentials may use topics outside the tenant namespace");
  }
  let draining = false;
  // In-process queues are bounded by themselves; a shared one is bounded by its depth.
  const depthGate =
    deps.queue.backend === "bullmq"
      ? new DepthGate(
          () => deps.queue.depth(),
          config.QUEUE_MAX_DEPTH,
          DEPTH_SAMPLE_MS,
          (error) => logger.warn({ err: error }, "cannot read the queue depth"),
        )
      : undefined;
  const batcher = new SubmissionBatcher(
    async (submission) => {
      await depthGate?.admit();
      await deps.queue.submit(submission);
      telemetry.jobsEnqueued.inc();
      telemetry.accepted.inc({ source: "mqtt" }, submission.metrics.length);
    },
    {
      maxBatch: config.MQTT_BATCH_MAX_MESSAGES,
      lingerMs: config.MQTT_BATCH_LINGER_MS,
      maxPending: config.MQTT_MAX_PENDING_MESSAGES,
    },
  );
  let broker: Aedes | undefined;
  const hooks = createHooks({
    credentials: deps.credentials,
    adminToken: deps.adminToken,
    allowAnonymous: config.MQTT_ALLOW_ANONYMOUS,
    batcher,
    limits: { ...config.payloadLimits, maxPayloadBytes: config.MQTT_MAX_PAYLOAD_BYTES },
    maxViolations: config.MQTT_MAX_VIOLATIONS,
    telemetry,
    logger,
    isDraining: () => draining,
    sendFeedback: (tenantId, agentId, feedback) => {
      broker?.publish(
        {
          cmd: "publish",
          topic: feedbackTopic(tenantId, agentId),
          payload: Buffer.from(JSON.stringify(feedback)),
          // QoS 1, so an agent with a persistent session gets what it missed while away.
          qos: 1,
          retain: false,
          dup: false,
        },
        () => undefined,
      );
    },
  });

  const backends = brokerBackends(config, logger);
  broker = await Aedes.createBroker({
    ...backends.options,
    authenticate: hooks.authenticate,
    authorizePublish: hooks.authorizePublish,
    authorizeSubscribe: hooks.authorizeSubscribe,
    authorizeForward: hooks.authorizeForward,
    maxTopicLevels: config.MQTT_MAX_TOPIC_LEVELS,
    keepaliveLimit: config.MQTT_KEEPALIVE_LIMIT_SECONDS,
    connectTimeout: config.MQTT_CONNECT_TIMEOUT_MS,
    drainTimeout: config.MQTT_DRAIN_TIMEOUT_MS,
  });
  const aedes = broker;
  skipDiscardedPublishes(aedes);
  aedes.on("clientError", (client: Client, error: Error) =>
    logger.debug({ clientId: client.id, err: error }, "MQTT client error"),
  );

  const stopViewerFeed = attachViewerFeed(aedes, deps.fanout, (client) => hooks.sessionOf(client)?.principal, logger);
  const stopRevocations = await deps.revocations.onRevoked((username) => {
    for (const client of Object.values(aedes.clients)) {
      const principal = hooks.sessionOf(client)?.principal;
      if (principal && "username" in principal && principal.username === username) {
        telemetry.mqttDisconnects.inc({ reason: "revoked" });
        logger.info({ clientId: client.id }, "disconnecting: credential revoked");
        client.close();
      }
    }
  });

  let listeners: Listeners;
  try {
    listeners = await startListeners(aedes, config, telemetry, logger);
  } catch (error) {
    depthGate?.close();
    stopRevocations();
    stopViewerFeed();
    await new Promise<void>((resolve) => aedes.close(() => resolve()));
    await backends.close();
    throw error;
  }

  return {
    ports: listeners.ports,
    close: async () => {
      const closed = listeners.close();
      draining = true;
      depthGate?.close();
      await batcher.flushAll();
      stopRevocations();
      stopViewerFeed();
      // Acknowledgements are written as the batches settle; closing the clients comes after them.
      await new Promise<void>((resolve) => aedes.close(() => resolve()));
      await closed;
      await backends.close();
    },
  };
}
