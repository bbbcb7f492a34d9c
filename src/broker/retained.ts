import { Readable } from "node:stream";
import type { Aedes, Client, PublishPacket } from "aedes";
import type { Logger } from "pino";
import { rateLimitedLog } from "../logger.ts";
import { Outgoing } from "./outgoing.ts";
import { SHARE_PREFIX } from "./shared/share.ts";

interface RetainedPacket {
  topic: string;
  payload: Buffer;
  qos: 0 | 1 | 2;
  /** MQTT 5 properties of the publish that retained it, and when it goes stale (src/broker/mqtt5.ts). */
  properties?: PublishPacket["properties"];
  messageExpiry?: number;
}

/**
 * Sends the retained messages that match a new subscription, in place of Aedes. Aedes streams them
 * without waiting for the subscriber's socket and goes on after the subscriber has left, so a storm
 * of clients that subscribe to `#` and disconnect grows memory without bound. Here a subscriber's
 * retained messages go one at a time, at the pace its socket drains, and stop the moment it
 * disconnects. Filters granted while a client's retained messages are still going out wait their
 * turn, at most once each.
 */
export function deliverRetainedOnSubscribe(broker: Aedes, logger: Logger): void {
  const { persistence } = broker;
  const matching = persistence.createRetainedStreamCombi.bind(persistence);
  // Aedes still asks on every subscription; it is given nothing to send.
  persistence.createRetainedStreamCombi = () => Readable.from([]);
  const logFailure = rateLimitedLog(logger, 5);
  /** Per client with retained messages going out: the filters still to do, with their granted QoS. */
  const pending = new WeakMap<Client, Map<string, number>>();

  async function send(client: Client, filter: string, grantedQos: number): Promise<void> {
    const outgoing = Outgoing.of(client.conn);
    for await (const packet of matching([filter]) as AsyncIterable<RetainedPacket>) {
      if (client.closed) return;
      await new Promise<void>((resolve) =>
        client.deliverQoS(
          {
            cmd: "publish",
            topic: packet.topic,
            payload: packet.payload,
            qos: Math.min(packet.qos, grantedQos) as RetainedPacket["qos"],
            retain: true,
            dup: false,
            ...(packet.properties && { properties: packet.properties }),
            ...(packet.messageExpiry !== undefined && { messageExpiry: packet.messageExpiry }),
          } as PublishPacket,
          resolve,
        ),
      );
      await outgoing?.drained();
    }
  }

  async function drain(client: Client, filters: Map<string, number>): Promise<void> {
    try {
      for (const [filter, qos] of filters) {
        filters.delete(filter);
        if (client.closed) return;
        await send(client, filter, qos);
      }
    } finally {
      pending.delete(client);
    }
  }

  broker.on("subscribe", (subscriptions, client) => {
    // A refused filter comes with QoS 128 (SUBACK failure), outside the typed range.
    // Shared subscriptions get no retained messages (MQTT 5.0, 4.8.2).
    const granted = subscriptions.filter(
      (subscription) => (subscription.qos as number) !== 128 && !subscription.topic.startsWith(SHARE_PREFIX),
    );
    if (granted.length === 0 || client.closed) return;
    const running = pending.get(client);
    const filters = running ?? new Map<string, number>();
    for (const { topic, qos } of granted) filters.set(topic, qos);
    if (running) return;
    pending.set(client, filters);
    drain(client, filters).catch((error: Error) =>
      logFailure({ clientId: client.id, err: error }, "could not send retained messages to a new subscription"),
    );
  });
}
