import { randomUUID } from "node:crypto";
import { Aedes, type PublishPacket } from "aedes";
import mqttPacket from "mqtt-packet";
import type { Logger } from "pino";
import type { Config } from "../config.ts";
import type { Identifier } from "../credentials/identify.ts";
import type { Revocations } from "../credentials/revocations.ts";
import { SubmissionBatcher } from "../ingest/batcher.ts";
import type { Intake } from "../ingest/intake.ts";
import type { TenantLimitsStore } from "../limits/limits-store.ts";
import type { RateLimiter } from "../limits/rate-limiter.ts";
import type { FanOut } from "../live/fanout.ts";
import type { LiveRejections } from "../live/rejections.ts";
import { rateLimitedLog } from "../logger.ts";
import type { Presence } from "../presence/presence.ts";
import type { Telemetry } from "../telemetry/prometheus.ts";
import { createConnectHooks } from "./authenticate.ts";
import { FeedbackCoalescer } from "./feedback.ts";
import { type Listeners, startListeners } from "./listeners.ts";
import { closeMqtt5, reasonOf, sessionExpiryOf, speakMqtt5, startsCleanMqtt5 } from "./mqtt5.ts";
import { createAuthorizePublish, skipDiscardedPublishes } from "./publish.ts";
import { ReadThrottle, TurnShares } from "./read-throttle.ts";
import { deliverRetainedOnSubscribe } from "./retained.ts";
import type { RetainedLedger } from "./retained-quota.ts";
import { SessionExpiry, type SessionExpiryStore } from "./session-expiry.ts";
import { markPersistentSessions, Sessions } from "./sessions.ts";
import { SharedGroups } from "./shared/groups.ts";
import type { SharedQueue } from "./shared/queue.ts";
import type { BrokerState } from "./shared-state.ts";
import { createAuthorizeForward, createAuthorizeSubscribe } from "./subscribe.ts";
import { feedbackTopic } from "./topics.ts";
import { attachViewerFeed } from "./viewer-feed.ts";

// mqtt-packet writes a packet id from a table of 65,536 two-byte Buffers made at the first packet:
// 6 MiB of heap and 65,536 objects every full GC walks, in a broker that sends a few packet ids a
// millisecond. Made when written instead (Buffer.allocUnsafe(2), from Node's pool).
mqttPacket.writeToStream.cacheNumbers = false;
speakMqtt5();

export interface BrokerDeps {
  config: Config;
  logger: Logger;
  identifier: Identifier;
  revocations: Revocations;
  intake: Intake;
  fanout: FanOut;
  rejections: LiveRejections;
  telemetry: Telemetry;
  limiter: RateLimiter;
  tenantLimits: TenantLimitsStore;
  presence: Presence;
  retained: RetainedLedger;
  /** Sessions, retained messages and routing: in memory, or shared across brokers (src/backends.ts). */
  state: BrokerState;
  /** When persistent sessions of disconnected clients end. */
  sessionExpiry: SessionExpiryStore;
  /** Shared-subscription groups, for every broker of the deployment. */
  sharedQueue: SharedQueue;
}

export interface RunningBroker {
  ports: Listeners["ports"];
  /**
   * Stops accepting connections and new publishes, flushes pending batches and waits for their
   * acknowledgements, then closes every client.
   */
  close(): Promise<void>;
  /** Reads the TLS listeners' certificate and key again (SIGHUP). */
  reloadCertificate(): Promise<void>;
}

export async function startBroker(deps: BrokerDeps): Promise<RunningBroker> {
  const { config, logger, telemetry } = deps;
  if (config.MQTT_ALLOW_ANONYMOUS) {
    logger.warn("MQTT_ALLOW_ANONYMOUS=true: clients without credentials may use topics outside the tenant namespace");
  }
  let draining = false;
  const batcher = new SubmissionBatcher((submission) => deps.intake.submit(submission), {
    maxBatch: config.MQTT_BATCH_MAX_MESSAGES,
    lingerMs: config.MQTT_BATCH_LINGER_MS,
    maxPending: config.MQTT_MAX_PENDING_MESSAGES,
  });
  const sessions = new Sessions();
  let broker: Aedes | undefined;
  const logLiveError = rateLimitedLog(logger, 5, 60_000);
  const feedback = new FeedbackCoalescer(config.MQTT_FEEDBACK_INTERVAL_MS, (tenantId, agentId, message) => {
    // The tenant's console sees what the agent is told.
    deps.rejections
      .publish(tenantId, {
        agent_id: agentId,
        source: "mqtt",
        reason: message.reason,
        message: message.message,
        count: message.count,
        topic: message.topic,
        at: new Date().toISOString(),
      })
      .catch((error: Error) => logLiveError({ reason: error.message }, "cannot send a rejection to the console"));
    const expirySeconds = config.MQTT_FEEDBACK_EXPIRY_SECONDS;
    broker?.publish(
      {
        cmd: "publish",
        topic: feedbackTopic(tenantId, agentId),
        payload: Buffer.from(JSON.stringify(message)),
        // QoS 1, so an agent with a persistent session gets what it missed while away, for a while:
        // `messageExpiry` (aedes-packet keeps it through the session store) is when it goes stale.
        qos: 1,
        retain: false,
        dup: false,
        properties: { messageExpiryInterval: expirySeconds },
        messageExpiry: Date.now() + expirySeconds * 1000,
      } as PublishPacket,
      () => undefined,
    );
  });
  const authorizePublish = createAuthorizePublish({
    sessions,
    limiter: deps.limiter,
    retained: deps.retained,
    batcher,
    limits: { ...config.payloadLimits, maxPayloadBytes: config.MQTT_MAX_PAYLOAD_BYTES },
    maxViolations: config.MQTT_MAX_VIOLATIONS,
    telemetry,
    logger,
    isDraining: () => draining,
    feedback,
  });

  const { state } = deps;
  const brokerId = randomUUID();
  const turnShares = new TurnShares(config.MQTT_TENANT_TURN_BYTES);
  const shared = new SharedGroups({
    queue: deps.sharedQueue,
    brokerId,
    principalOf: (client) => sessions.of(client)?.principal,
    maxInflight: config.MQTT_SHARED_MAX_INFLIGHT,
    sessionExpiryOf: (client) => sessionExpiryOf(client) ?? config.MQTT_MAX_SESSION_EXPIRY_SECONDS,
    countDropped: (count) => telemetry.mqttSharedDropped.inc(count),
    countRedelivered: (count) => telemetry.mqttSharedRedelivered.inc(count),
    logger,
  });
  /** Made once the broker is: the connect hook that calls it is made before. */
  let expiry: SessionExpiry | undefined;
  const connectHooks = createConnectHooks({
    identifier: deps.identifier,
    sessions,
    limiter: deps.limiter,
    tenantLimits: deps.tenantLimits,
    presence: deps.presence,
    brokerId,
    allowAnonymous: config.MQTT_ALLOW_ANONYMOUS,
    clientAuth: config.MQTT_TLS_CLIENT_AUTH,
    maxClientIdLength: config.MQTT_MAX_CLIENT_ID_LENGTH,
    mqtt5: {
      receiveMaximum: config.MQTT_RECEIVE_MAXIMUM,
      topicAliasMaximum: config.MQTT_TOPIC_ALIAS_MAXIMUM,
      maximumPacketSize: config.MQTT_MAX_PACKET_BYTES,
      keepaliveLimit: config.MQTT_KEEPALIVE_LIMIT_SECONDS,
      maxTopicLevels: config.MQTT_MAX_TOPIC_LEVELS,
      maxSessionExpirySeconds: config.MQTT_MAX_SESSION_EXPIRY_SECONDS,
      countDisconnect: (reason) => telemetry.countDisconnect(reason),
      countRefusedFilters: (count) => telemetry.mqttSubscriptionsDenied.inc(count),
    },
    onAuthenticated: async (client) => {
      // An agent's reads share each turn of the event loop with the other agents of its tenant.
      const principal = sessions.of(client)?.principal;
      if (principal?.kind === "agent") ReadThrottle.of(client.conn)?.shareTurns(turnShares.of(principal.tenantId));
      await expiry?.connected(client);
    },
    telemetry,
    logger,
  });
  broker = await Aedes.createBroker({
    ...state.options,
    id: brokerId,
    ...connectHooks,
    preConnect: (client, packet, done) => {
      SharedGroups.grantAtMostQos1(client);
      connectHooks.preConnect(client, packet, done);
    },
    authorizePublish,
    authorizeSubscribe: createAuthorizeSubscribe(sessions, shared, telemetry, logger),
    authorizeForward: createAuthorizeForward(sessions),
    published: shared.published,
    maxTopicLevels: config.MQTT_MAX_TOPIC_LEVELS,
    keepaliveLimit: config.MQTT_KEEPALIVE_LIMIT_SECONDS,
    connectTimeout: config.MQTT_CONNECT_TIMEOUT_MS,
    // Writes never wait for a drain (src/broker/outgoing.ts): a slow subscriber is bounded there.
    drainTimeout: 0,
  });
  const aedes = broker;
  const logExpiryError = rateLimitedLog(logger, 5, 60_000);
  expiry = new SessionExpiry(
    aedes,
    deps.sessionExpiry,
    (client) => sessionExpiryOf(client) ?? config.MQTT_MAX_SESSION_EXPIRY_SECONDS,
    startsCleanMqtt5,
    (count) => telemetry.mqttSessionsExpired.inc(count),
    (error) => logExpiryError({ reason: error.message }, "cannot expire persistent sessions"),
  );
  telemetry.setSessionSource(() => deps.sessionExpiry.waiting());
  await shared.start(aedes);
  skipDiscardedPublishes(aedes);
  deliverRetainedOnSubscribe(aedes, logger);
  markPersistentSessions(aedes);
  aedes.on("clientError", (client, error) => logger.debug({ clientId: client.id, err: error }, "MQTT client error"));

  const stopViewerFeed = attachViewerFeed(aedes, deps.fanout, (client) => sessions.of(client)?.principal, logger);
  const stopRevocations = await deps.revocations.onRevoked((username) => {
    for (const client of Object.values(aedes.clients)) {
      const principal = sessions.of(client)?.principal;
      if (principal && "username" in principal && principal.username === username) {
        telemetry.countDisconnect("revoked");
        logger.info({ clientId: client.id }, "disconnecting: credential revoked");
        closeMqtt5(client, reasonOf("revoked", "the credential was revoked"));
      }
    }
  });

  let listeners: Listeners;
  try {
    listeners = await startListeners(aedes, config, telemetry, logger);
  } catch (error) {
    feedback.close();
    expiry.close();
    stopRevocations();
    stopViewerFeed();
    await new Promise<void>((resolve) => aedes.close(() => resolve()));
    await shared.close();
    await state.close();
    throw error;
  }

  return {
    ports: listeners.ports,
    reloadCertificate: () => listeners.reloadCertificate(),
    close: async () => {
      const closed = listeners.close();
      draining = true;
      deps.intake.close();
      await batcher.flushAll();
      feedback.close();
      expiry?.close();
      stopRevocations();
      stopViewerFeed();
      // Acknowledgements are written as the batches settle; closing the clients comes after them.
      await new Promise<void>((resolve) => aedes.close(() => resolve()));
      // What members held unacknowledged goes back to their groups, for other brokers' members.
      await shared.close();
      await closed;
      await state.close();
    },
  };
}
