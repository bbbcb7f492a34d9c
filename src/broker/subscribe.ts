import type { AuthorizeForwardHandler, AuthorizeSubscribeHandler } from "aedes";
import type { Logger } from "pino";
import { rateLimitedLog } from "../logger.ts";
import type { Telemetry } from "../telemetry/prometheus.ts";
import { mayReceive, maySubscribe } from "./access.ts";
import type { Sessions } from "./sessions.ts";
import type { SharedGroups } from "./shared/groups.ts";
import { parseSharedFilter } from "./shared/share.ts";

/**
 * SUBSCRIBE: each filter is granted or refused (SUBACK 128) by the principal's rights. A shared
 * subscription is judged by the filter after `$share/{name}/`, and joins its group before the SUBACK.
 */
export function createAuthorizeSubscribe(
  sessions: Sessions,
  shared: SharedGroups,
  telemetry: Telemetry,
  logger: Logger,
): AuthorizeSubscribeHandler {
  const logJoinError = rateLimitedLog(logger, 5, 60_000);
  return (client, subscription, done) => {
    const principal = sessions.of(client)?.principal;
    const share = parseSharedFilter(subscription.topic);
    const filter = share === undefined ? subscription.topic : share === "invalid" ? undefined : share.filter;
    if (!principal || filter === undefined || !maySubscribe(principal, filter)) {
      telemetry.mqttSubscriptionsDenied.inc();
      return done(null, null);
    }
    if (share === undefined || share === "invalid") return done(null, subscription);
    shared.join(client, share, subscription.qos, principal).then(
      (qos) => done(null, { ...subscription, qos }),
      (error: Error) => {
        logJoinError({ clientId: client.id, reason: error.message }, "cannot join a shared subscription");
        telemetry.mqttSubscriptionsDenied.inc();
        done(null, null);
      },
    );
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
