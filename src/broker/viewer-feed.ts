import type { Aedes, Client } from "aedes";
import type { Logger } from "pino";
import type { FanOut, StoredMetric } from "../live/fanout.ts";
import { rateLimitedLog } from "../logger.ts";
import type { MqttPrincipal } from "./access.ts";
import { metricTopic } from "./topics.ts";

/** A stored reading as viewers get it: on its metric's topic, `{value, timestamp, tags?}`. */
export function storedReadingMessage(metric: StoredMetric): { topic: string; payload: Buffer } {
  const reading = { value: metric.value, timestamp: metric.ts, ...(metric.tags && { tags: metric.tags }) };
  return {
    topic: metricTopic(metric.tenantId, metric.agentId, metric.name),
    payload: Buffer.from(JSON.stringify(reading)),
  };
}

/**
 * Hands newly stored metrics to the MQTT viewers on this broker: while a tenant has at least one
 * viewer connected here, the broker follows that tenant's fan-out channel and republishes each
 * stored metric locally on `metrics/{tenant}/{agent}/{metric}` as `{value, timestamp, tags?}`, at
 * QoS 0 (a live feed; history is in the HTTP API).
 */
export function attachViewerFeed(
  broker: Aedes,
  fanout: FanOut,
  principalOf: (client: Client) => MqttPrincipal | undefined,
  logger: Logger,
): () => void {
  const logFollowError = rateLimitedLog(logger, 5, 60_000);
  const feeds = new Map<string, { viewers: number; stop: Promise<(() => void) | undefined> }>();

  const publish = (metrics: StoredMetric[]) => {
    for (const metric of metrics) {
      broker.publish(
        { cmd: "publish", ...storedReadingMessage(metric), qos: 0, retain: false, dup: false },
        () => undefined,
      );
    }
  };

  const viewerTenant = (client: Client) => {
    const principal = principalOf(client);
    return principal?.kind === "token" && principal.role === "viewer" ? principal.tenantId : undefined;
  };

  const onClient = (client: Client) => {
    const tenantId = viewerTenant(client);
    if (!tenantId) return;
    const feed = feeds.get(tenantId);
    if (feed) {
      feed.viewers++;
      return;
    }
    const stop = fanout.subscribe(tenantId, publish).catch((error: Error) => {
      logFollowError({ reason: error.message, tenantId }, "cannot follow the fan-out for MQTT viewers");
      return undefined;
    });
    feeds.set(tenantId, { viewers: 1, stop });
  };

  const onClientDisconnect = (client: Client) => {
    const tenantId = viewerTenant(client);
    const feed = tenantId ? feeds.get(tenantId) : undefined;
    if (!tenantId || !feed || --feed.viewers > 0) return;
    feeds.delete(tenantId);
    feed.stop.then((stop) => stop?.());
  };

  broker.on("client", onClient);
  broker.on("clientDisconnect", onClientDisconnect);
  return () => {
    broker.off("client", onClient);
    broker.off("clientDisconnect", onClientDisconnect);
    for (const feed of feeds.values()) feed.stop.then((stop) => stop?.());
    feeds.clear();
  };
}
