import type { AuthorizeForwardHandler, AuthorizeSubscribeHandler } from "aedes";
import type { Telemetry } from "../telemetry/prometheus.ts";
import { mayReceive, maySubscribe } from "./access.ts";
import type { Sessions } from "./sessions.ts";

/** SUBSCRIBE: each filter is granted or refused (SUBACK 128) by the principal's rights. */
export function createAuthorizeSubscribe(sessions: Sessions, telemetry: Telemetry): AuthorizeSubscribeHandler {
  return (client, subscription, done) => {
    const principal = sessions.of(client)?.principal;
    if (principal && maySubscribe(principal, subscription.topic)) return done(null, subscription);
    telemetry.mqttSubscriptionsDenied.inc();
    done(null, null);
  };
}

/**
 * Every delivery, checked once more against the receiver's rights, so no routing path (retained
 * messages, restored sessions, other brokers) can hand a connection a topic it may not read.
 */
export function createAuthorizeForward(sessions: Sessions): AuthorizeForwardHandler {
  return (client, packet) => {
    const principal = sessions.of(client)?.principal;
    return principal && mayReceive(principal, packet.topic) ? packet : null;
  };
}
