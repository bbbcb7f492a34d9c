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
 */
export class MetricsLocalEmitter {
  constructor(
    private readonly local: MQEmitter,
    private readonly shared: MQEmitter,
    /** Ends the shared emitter's connections (its own close waits for events a dead connection never sends). */
    private readonly closeShared: () => void,
  ) {}

  on(topic: string, listener: Listener, done?: Done): this {
    this.local.on(topic, listener, () => this.shared.on(topic, listener, done));
    return this;
  }

  removeListener(topic: string, listener: Listener, done?: Done): void {
    this.local.removeListener(topic, listener, () => this.shared.removeListener(topic, listener, done));
  }

  emit(packet: Packet, done?: (error?: Error) => void): void {
    (packet.topic.startsWith(LOCAL_TOPIC_PREFIX) ? this.local : this.shared).emit(packet, done);
  }

  close(done: () => void): void {
    this.local.close(() => {
      this.closeShared();
      done();
    });
  }
}
