import type { Aedes, AuthorizePublishHandler, Client, PublishPacket } from "aedes";
import type { Logger } from "pino";
import type { PayloadLimits } from "../config.ts";
import { parseLinePayload } from "../formats/line-protocol.ts";
import type { SubmissionBatcher } from "../ingest/batcher.ts";
import { type ParsedBatch, parseMqttPayload } from "../ingest/payload.ts";
import { MQTT5, REFUSALS, type Rejected, reject } from "../ingest/refusals.ts";
import type { LimitName, RateLimiter, Sender } from "../limits/rate-limiter.ts";
import { rateLimitedLog } from "../logger.ts";
import type { Telemetry } from "../telemetry/prometheus.ts";
import { agentOfClientId, type MqttPrincipal } from "./access.ts";
import type { FeedbackCoalescer } from "./feedback.ts";
import { type AckReason, acknowledgeMqtt5, explainCloseMqtt5, reasonOf } from "./mqtt5.ts";
import { ReadThrottle } from "./read-throttle.ts";
import type { RetainedLedger } from "./retained-quota.ts";
import { decideCached, type Sessions } from "./sessions.ts";
import { DISCARD_TOPIC } from "./topics.ts";

export interface PublishDeps {
  sessions: Sessions;
  limiter: RateLimiter;
  retained: RetainedLedger;
  batcher: SubmissionBatcher;
  limits: PayloadLimits & { maxPayloadBytes: number };
  maxViolations: number;
  telemetry: Telemetry;
  logger: Logger;
  feedback: FeedbackCoalescer;
  /** True once shutdown began: new publishes are refused unacknowledged, so the client resends elsewhere. */
  isDraining(): boolean;
}

/**
 * What the MQTT 5 PUBACK / PUBREC of a publish with refused readings says: the first refusal's
 * reason code when nothing was accepted, else success with the counts (the feedback topic has the
 * details of each).
 */
export function refusalAck(rejected: readonly Rejected[], accepted: number): AckReason {
  const first = rejected[0];
  const counts = { accepted: String(accepted), rejected: String(rejected.length) };
  if (!first) return { code: MQTT5.SUCCESS };
  if (accepted > 0) {
    return {
      code: MQTT5.SUCCESS,
      reasonString: `${rejected.length} of ${accepted + rejected.length} readings refused, the first ${first.reason}: ${first.message}`,
      userProperties: counts,
    };
  }
  return {
    code: REFUSALS[first.reason].mqtt5,
    reasonString: `${first.reason}: ${first.message}`,
    userProperties: counts,
  };
}

/** Acknowledged, never routed: see DISCARD_TOPIC. */
function discard(packet: PublishPacket): void {
  packet.topic = DISCARD_TOPIC;
  packet.retain = false;
}

/**
 * After acknowledging a publish Aedes routes it; a discarded one has nowhere to go, so it skips
 * the routing work (packet copy, emitter, offline-session lookup) on the hot path.
 */
export function skipDiscardedPublishes(broker: Aedes): void {
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

/**
 * PUBLISH: decided against the principal's rights; a metric publish is parsed and batched here,
 * because Aedes waits for this hook before it sends the PUBACK / PUBREC: so the acknowledgement
 * leaves only once the submission is durable. Rejections are acknowledged and discarded.
 */
export function createAuthorizePublish(deps: PublishDeps): AuthorizePublishHandler {
  const { sessions, batcher, telemetry, logger, limits } = deps;
  const logRejection = rateLimitedLog(logger, 20);
  const logDrop = rateLimitedLog(logger, 20);

  function report(
    client: Client | null,
    packet: PublishPacket,
    principal: MqttPrincipal,
    rejected: ParsedBatch["rejected"] | Rejected[],
    accepted = 0,
  ): void {
    const { topic } = packet;
    const clientId = client?.id;
    acknowledgeMqtt5(client, packet.messageId, () => refusalAck(rejected, accepted));
    telemetry.countRejections(
      "mqtt",
      rejected.map((r) => r.reason),
    );
    const first = rejected[0];
    if (first) logRejection({ clientId, topic, reason: first.reason, count: rejected.length }, "publish rejected");
    if (principal.kind !== "agent") return;
    for (const rejection of rejected) {
      const { index, line } = rejection as { index?: number; line?: number };
      deps.feedback.report(principal.tenantId, principal.agentId, {
        topic,
        reason: rejection.reason,
        message: rejection.message,
        ...(index !== undefined && { index }),
        ...(line !== undefined && { line }),
      });
    }
  }

  /**
   * Charges a publish to its sender's rate limits; over them, the sender's socket is not read for as
   * long as its debt lasts. The admin is not limited.
   */
  function charge(client: Client | null, principal: MqttPrincipal, readings: number, bytes: number, now: number) {
    const sender: Sender | undefined =
      principal.kind === "agent"
        ? { tenantId: principal.tenantId, key: `${principal.tenantId}/${principal.agentId}` }
        : principal.kind === "anonymous" && client
          ? { key: `anonymous/${client.id}` }
          : undefined;
    if (!sender || !client) return;
    const { waitMs, limit, settled } = deps.limiter.charge(sender, readings, bytes, now);
    const throttle = ReadThrottle.of(client.conn);
    if (!throttle) return;
    const count = (limit: LimitName) => (ms: number) => {
      if (ms > 0) telemetry.throttledSeconds.inc({ tenant_id: sender.tenantId ?? "", limit }, ms / 1000);
    };
    if (limit && waitMs > 0) count(limit)(throttle.holdFor(waitMs, now));
    if (settled) throttle.holdWhile(settled, count("tenant_readings"));
  }

  return (client, packet, done) => {
    const receivedAt = Date.now();
    const session = sessions.of(client);
    // A will left by a client whose broker died is published with no live client behind it.
    const willAgent = session ? undefined : agentOfClientId((packet as { clientId?: string }).clientId ?? "");
    const principal: MqttPrincipal | undefined =
      session?.principal ?? (willAgent && { kind: "agent", username: "", ...willAgent });
    if (!principal) return done(new Error("publish from an unauthenticated connection"));
    if (deps.isDraining()) {
      explainCloseMqtt5(client, reasonOf("shutting_down"));
      return done(new Error("the broker is shutting down"));
    }
    const payload = packet.payload as Buffer;

    const decision = decideCached(session, principal, packet.topic);
    if (decision.kind !== "metric") charge(client, principal, 1, payload.length, receivedAt);
    if (decision.kind === "plain") {
      if (!packet.retain) return done(null);
      // A retained message (or will) is stored only within the retained quota; an empty one clears the topic.
      const stored =
        payload.length === 0
          ? deps.retained.release(packet.topic).then(() => undefined)
          : deps.retained.claim(packet.topic, principal.kind, payload.length + Buffer.byteLength(packet.topic));
      stored.then(
        (refusal) => {
          if (refusal) {
            report(client, packet, principal, [reject("retained_quota", refusal)]);
            discard(packet);
          }
          done(null);
        },
        (error: Error) => {
          logDrop(
            { clientId: client?.id, topic: packet.topic, err: error },
            "retained publish refused: the retained quota cannot be read",
          );
          done(error);
        },
      );
      return;
    }
    if (decision.kind === "rejected") {
      report(client, packet, principal, [decision]);
      if (decision.reason === "forbidden" && session && ++session.violations >= deps.maxViolations) {
        telemetry.countDisconnect("violations");
        explainCloseMqtt5(client, reasonOf("violations", "too many forbidden publishes"));
        logRejection(
          { clientId: client?.id, violations: session.violations },
          "disconnecting: too many forbidden publishes",
        );
        return done(new Error("too many forbidden publishes"));
      }
      discard(packet);
      return done(null);
    }

    const { points, rejected } =
      decision.kind === "lines"
        ? parseLinePayload(payload, decision.agent, receivedAt, limits)
        : parseMqttPayload(payload, decision.name, receivedAt, limits);
    charge(client, principal, Math.max(1, points.length + rejected.length), payload.length, receivedAt);
    if (rejected.length > 0) report(client, packet, principal, rejected, points.length);
    if (points.length === 0) {
      discard(packet);
      return done(null);
    }
    batcher.add(decision.tenantId, decision.agentId, points, receivedAt).then(
      () => {
        discard(packet);
        if (packet.qos > 0) telemetry.mqttPubackSeconds.observe((Date.now() - receivedAt) / 1000);
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
        explainCloseMqtt5(client, reasonOf("server_busy", "the queue cannot take the publish now"));
        logDrop(
          { clientId: client?.id, topic: packet.topic, err: error },
          "publish not acknowledged: the queue could not take it",
        );
        done(error);
      },
    );
  };
}
