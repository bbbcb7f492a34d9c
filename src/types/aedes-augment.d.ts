// Public runtime properties that the shipped typings leave out.
import type { EventEmitter } from "node:events";
import type { Readable } from "node:stream";
import type { Client, PublishPacket } from "aedes";

declare module "aedes" {
  interface Aedes {
    /** Connected clients of this broker, by client id. */
    clients: Record<string, Client>;
    /** The session store Aedes was given (or its in-memory default), set up by `listen`. */
    persistence: {
      /** Retained messages whose topics match any of the filters. */
      createRetainedStreamCombi(filters: string[]): Readable;
    };
  }
  interface Aedes {
    /** Set once `close` began. */
    closed: boolean;
  }
  interface Client {
    /** Set once `close` began. */
    closed: boolean;
    /** The broker the client is connected to. */
    broker: Aedes;
    /** The client's subscriptions, by filter. */
    subscriptions: Record<string, unknown>;
    /** What Aedes itself calls to send a retained message to a new subscription (no outgoing-queue record). */
    deliverQoS(packet: PublishPacket, done: () => void): void;
  }
}

declare module "mqemitter-redis" {
  interface MQEmitterRedis {
    /** Re-emits its connections' events, `error` included. */
    state: EventEmitter;
  }
}
