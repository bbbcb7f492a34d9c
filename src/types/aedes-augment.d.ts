// Public runtime properties that the shipped typings leave out.
import type { EventEmitter } from "node:events";
import type { Client } from "aedes";

declare module "aedes" {
  interface Aedes {
    /** Connected clients of this broker, by client id. */
    clients: Record<string, Client>;
  }
}

declare module "mqemitter-redis" {
  interface MQEmitterRedis {
    /** Re-emits its connections' events, `error` included. */
    state: EventEmitter;
  }
}
