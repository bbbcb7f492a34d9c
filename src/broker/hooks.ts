import type {
  AuthenticateError,
  AuthenticateHandler,
  AuthorizeForwardHandler,
  AuthorizePublishHandler,
  AuthorizeSubscribeHandler,
  Client,
  PublishPacket,
} from "aedes";
import type { Logger } from "pino";
import type { PayloadLimits } from "../config.ts";
import { parseToken, secretMatcher } from "../credentials/secrets.ts";
import type { CredentialStore } from "../credentials/store.ts";
import type { SubmissionBatcher } from "../ingest/batcher.ts";
import { type ParsedBatch, parseMqttPayload } from "../ingest/payload.ts";
import type { Rejected } from "../ingest/rejection.ts";
import { rateLimitedLog } from "../logger.ts";
import type { Telemetry } from "../telemetry/metrics.ts";
import {
  agentOfClientId,
  decidePublish,
  type MqttPrincipal,
  mayReceive,
  maySubscribe,
  namespacedClientId,
  type PublishDecision,
} from "./access.ts";

/**
 * Metric publishes are acknowledged, then sent here, where no subscription can reach them: a
 * rejected one must never be routed, and an accepted one reaches viewers once stored, through the
 * fan-out (src/broker/viewer-feed.ts), like the SSE stream.
 */
export const DISCARD_TOPIC = "$edge-ingest/discarded";
/** Topics Aedes routes within this process only (src/broker/emitter.ts). */
export const LOCAL_TOPIC_PREFIXES = ["metrics/", "$edge-ingest/"];

// CONNACK return codes (MQTT 3.1.1, 3.2.2.3).
const SERVER_UNAVAILABLE = 3;
const BAD_USERNAME_OR_PASSWORD = 4;
const NOT_AUTHORIZED = 5;

export interface Session {
  principal: MqttPrincipal;
  violations: number;
  /** The decisions for this connection's recent topics: a device publishes to a few, over and over. */
  decisions: Map<string, PublishDecision>;
}

const DECISIONS_PER_SESSION = 64;

function decideCached(session: Session | undefined, principal: MqttPrincipal, topic: string): PublishDecision {
  const cached = session?.decisions.get(topic);
  if (cached) return cached;
  const decision = decidePublish(principal, topic);
  if (session) {
    if (session.decisions.size >= DECISIONS_PER_SESSION) session.decisions.clear();
    session.decisions.set(topic, decision);
  }
  return decision;
}

export interface HookDeps {
  credentials: CredentialStore;
  adminToken: string | undefined;
  allowAnonymous: boolean;
  batcher: SubmissionBatcher;
  limits: PayloadLimits & { maxPayloadBytes: number };
  maxViolations: number;
  telemetry: Telemetry;
  logger: Logger;
  /** Sends `{topic, reason, message}` to the agent's feedback topic. */
  sendFeedback(tenantId: string, agentId: string, feedback: Record<string, unknown>): void;
  /** True once shutdown began: new publishes are refused unacknowledged, so the client resends elsewhere. */
  isDraining(): boolean;
}

function connackError(returnCode: number, message: string): AuthenticateError {
  return Object.assign(new Error(message), { returnCode }) as AuthenticateError;
}

function discard(packet: PublishPacket): void {
  packet.topic = DISCARD_TOPIC;
  packet.retain = false;
}

/**
 * The Aedes hooks: authenticate, then authorize every publish, subscription and delivery against
 * the connection's principal. Accepted metric publishes are batched into submissions inside
 * `authorizePublish`, whose callback Aedes waits for before it sends the PUBACK / PUBREC: so the
 * acknowledgement leaves only once the submission is durable.
 */
export function createHooks(deps: HookDeps) {
  const { credentials, batcher, telemetry, logger, limits } = deps;
  const sessions = new WeakMap<Client, Session>();
  const isAdminToken = deps.adminToken ? secretMatcher(deps.adminToken) : () => false;
  const logRejection = rateLimitedLog(logger, 20);
  const logDrop = rateLimitedLog(logger, 20);

  async function identify(username: string | undefined, password: Buffer | undefined): Promise<MqttPrincipal> {
    const secret = password?.toString("utf8");
    if (!username && !secret) {
      if (deps.allowAnonymous) return { kind: "anonymous" };
      throw connackError(NOT_AUTHORIZED, "credentials are required");
    }
    if (!secret) throw connackError(BAD_USERNAME_OR_PASSWORD, "a password is required");
    if (isAdminToken(secret)) return { kind: "admin" };
    // A viewer connects with its token as the password; an agent with its username and secret.
    const token = parseToken(secret);
    const principal = token
      ? await credentials.verify(token.username, token.secret)
      : username
        ? await credentials.verify(username, secret)
        : undefined;
    if (!principal) throw connackError(BAD_USERNAME_OR_PASSWORD, "unknown or revoked credential");
    if (principal.kind === "token" && principal.role !== "viewer") {
      throw connackError(NOT_AUTHORIZED, "over MQTT a tenant token connects only as a viewer");
    }
    return principal;
  }

  const authenticate: AuthenticateHandler = (client, username, password, done) => {
    identify(username, password).then(
      (principal) => {
        client.id = namespacedClientId(principal, client.id);
        sessions.set(client, { principal, violations: 0, decisions: new Map() });
        done(null, true);
      },
      (error: AuthenticateError) => {
        if (error.returnCode === undefined) {
          logger.error({ err: error }, "credential lookup failed");
          return done(connackError(SERVER_UNAVAILABLE, "the credential store is unavailable"), false);
        }
        done(error, false);
      },
    );
  };

  function report(
    principal: MqttPrincipal,
    topic: string,
    rejected: ParsedBatch["rejected"] | Rejected[],
    clientId: string | undefined,
  ): void {
    telemetry.countRejections(
      "mqtt",
      rejected.map((r) => r.reason),
    );
    const first = rejected[0];
    if (first) logRejection({ clientId, topic, reason: first.reason, count: rejected.length }, "publish rejected");
    if (principal.kind !== "agent") return;
    for (const rejection of rejected) {
      const index = "index" in rejection ? rejection.index : undefined;
      deps.sendFeedback(principal.tenantId, principal.agentId, {
        topic,
        reason: rejection.reason,
        message: rejection.message,
        ...(index !== undefined && { index }),
      });
    }
  }

  const authorizePublish: AuthorizePublishHandler = (client, packet, done) => {
    const receivedAt = Date.now();
    const session = client ? sessions.get(client) : undefined;
    // A will left by a client whose broker died is published with no live client behind it.
    const willAgent = session ? undefined : agentOfClientId((packet as { clientId?: string }).clientId ?? "");
    const principal: MqttPrincipal | undefined =
      session?.principal ?? (willAgent && { kind: "agent", username: "", ...willAgent });
    if (!principal) return done(new Error("publish from an unauthenticated connection"));
    if (deps.isDraining()) return done(new Error("the broker is shutting down"));

    const decision = decideCached(session, principal, packet.topic);
    if (decision.kind === "plain") return done(null);
    if (decision.kind === "rejected") {
      report(principal, packet.topic, [decision], client?.id);
      if (decision.reason === "forbidden" && session && ++session.violations >= deps.maxViolations) {
        telemetry.mqttDisconnects.inc({ reason: "violations" });
        logger.warn(
          { clientId: client?.id, violations: session.violations },
          "disconnecting: too many forbidden publishes",
        );
        return done(new Error("too many forbidden publishes"));
      }
      discard(packet);
      return done(null);
    }

    const { points, rejected } = parseMqttPayload(packet.payload as Buffer, decision.name, receivedAt, limits);
    if (rejected.length > 0) report(principal, packet.topic, rejected, client?.id);
    if (points.length === 0) {
      discard(packet);
      return done(null);
    }
    batcher.add(decision.tenantId, decision.agentId, points, receivedAt).then(
      () => {
        discard(packet);
        done(null);
      },
      (error: Error) => {
        if (packet.qos === 0) {
          telemetry.mqttQos0Dropped.inc(points.length);
          logDrop(
            { clientId: client?.id, topic: packet.topic, err: error },
            "QoS 0 publish dropped: the queue could not take it",
          );
          discard(packet);
          return done(null);
        }
        // No acknowledgement: closing the connection makes the client resend after it reconnects.
        telemetry.mqttUnacknowledged.inc();
        logDrop(
          { clientId: client?.id, topic: packet.topic, err: error },
          "publish not acknowledged: the queue could not take it",
        );
        done(error);
      },
    );
  };

  const authorizeSubscribe: AuthorizeSubscribeHandler = (client, subscription, done) => {
    const principal = client ? sessions.get(client)?.principal : undefined;
    if (principal && maySubscribe(principal, subscription.topic)) return done(null, subscription);
    telemetry.mqttSubscriptionsDenied.inc();
    done(null, null);
  };

  const authorizeForward: AuthorizeForwardHandler = (client, packet) => {
    const principal = sessions.get(client)?.principal;
    return principal && mayReceive(principal, packet.topic) ? packet : null;
  };

  return {
    authenticate,
    authorizePublish,
    authorizeSubscribe,
    authorizeForward,
    sessionOf: (client: Client) => sessions.get(client),
  };
}
