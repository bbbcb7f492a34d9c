import type mqemitter from "mqemitter";
import { LOCAL_TOPIC_PREFIX } from "./topics.ts";

type MQEmitter = mqemitter.MQEmitter;
type Packet = Parameters<MQEmitter["emit"]>[0];
type Listener = Parameters<MQEmitter["on"]>[1];
type Done = () => void;

/**
 * The emitter Aedes routes with in distributed mode. Messages under `metrics/` stay in this
 * process: every broker gets the stored metrics once per batch through the fan-out and hands them
 * to its own viewers, so routing each publish through Redis as well would cost a Redis round trip
 * per message and deliver it twice. Everything else (feedback, `$SYS`, plain topics) goes through
 * the shared emitter to every broker. Subscriptions listen on both.
 *
 * mqemitter-redis names its Redis channels after MQTT topics and turns `#` into a pattern
 * subscription to every channel of the Redis, where it cannot decode what others publish (this
 * deployment's own Pub/Sub, other deployments) and throws. So its topics are put under `prefix`
 * (one more topic level), `REDIS_PREFIX:mqtt/`: as `x/#` becomes the pattern `x*`, a pattern then
 * covers this deployment's broker traffic and nothing else (no other channel of it starts so).
 */
export class BrokerEmitter {
  /** Each listener as the shared emitter calls it: with the topic given back without the prefix. */
  private readonly unprefixed = new WeakMap<Listener, Listener>();
  private closed = false;

  constructor(
    private readonly local: MQEmitter,
    private readonly shared: MQEmitter,
    /** Ends the shared emitter's connections (its own close waits for events a dead connection never sends). */
    private readonly closeShared: () => void,
    private readonly prefix: string,
  ) {}

  private sharedListener(listener: Listener): Listener {
    let wrapped = this.unprefixed.get(listener);
    if (!wrapped) {
      wrapped = (packet, done) => {
        // One decoded message is handed to every matching listener here: strip the prefix once.
        if (packet.topic.startsWith(this.prefix)) packet.topic = packet.topic.slice(this.prefix.length);
        listener(packet, done);
      };
      this.unprefixed.set(listener, wrapped);
    }
    return wrapped;
  }

  on(topic: string, listener: Listener, done?: Done): this {
    this.local.on(topic, listener, () => this.shared.on(this.prefix + topic, this.sharedListener(listener), done));
    return this;
  }

  removeListener(topic: string, listener: Listener, done?: Done): void {
    this.local.removeListener(topic, listener, () => {
      // After close the shared emitter's connections are gone: an unsubscribe there would never be
      // answered (ioredis strands a command sent after a disconnect while it was reconnecting).
      if (this.closed) done?.();
      else this.shared.removeListener(this.prefix + topic, this.sharedListener(listener), done);
    });
  }

  emit(packet: Packet, done?: (error?: Error) => void): void {
    if (packet.topic.startsWith(LOCAL_TOPIC_PREFIX)) this.local.emit(packet, done);
    else this.shared.emit({ ...packet, topic: this.prefix + packet.topic }, done);
  }

  close(done: () => void): void {
    this.closed = true;
    this.local.close(() => {
      this.closeShared();
      done();
    });
  }
}
