import aedesPersistenceRedis from "aedes-persistence-redis";
import type { Redis } from "ioredis";
import mqemitter from "mqemitter";
import mqemitterRedis from "mqemitter-redis";
import type { Logger } from "pino";
import { rateLimitedLog } from "../logger.ts";
import type { RedisConnector } from "../redis/connection.ts";
import { BrokerEmitter } from "./emitter.ts";

/**
 * aedes-persistence-redis sends some commands without awaiting them (the will list's `lrem` and
 * `rpush` on every connect and disconnect). When Redis stays unreachable past the connection's
 * retries, or the connection closes with one in flight, that rejection would be unhandled and end
 * the process. Every reply gets a handler here; a caller that awaits a command still gets its error.
 */
export function handleUnawaitedReplies(connection: Redis): Redis {
  const send = connection.sendCommand.bind(connection);
  connection.sendCommand = (...args) => {
    const reply = send(...args);
    if (reply instanceof Promise) reply.catch(() => undefined);
    return reply;
  };
  return connection;
}

/** What Aedes shares across brokers: sessions and retained messages (persistence), and routing (emitter). */
export interface BrokerState {
  options: { persistence?: unknown; mq?: BrokerEmitter };
  close(): Promise<void>;
}

/**
 * Distributed mode: sessions, subscriptions and retained messages in Redis under
 * `prefix:mqtt:` (aedes-persistence-redis), routing through Redis Pub/Sub under `prefix:mqtt/`
 * (mqemitter-redis behind BrokerEmitter), so a client can reconnect to any broker.
 */
export function redisBrokerState(connect: RedisConnector, prefix: string, logger: Logger): BrokerState {
  // Pipelined: a client's connect costs a dozen commands, and a reconnecting fleet's would otherwise
  // each take a write of their own (about a tenth of a broker's busy time in a storm).
  const persistenceConnection = handleUnawaitedReplies(
    connect("broker-sessions", { keyPrefix: `${prefix}:mqtt:`, enableAutoPipelining: true }),
  );
  const logRedisError = rateLimitedLog(logger, 5, 60_000);
  persistenceConnection.on("error", (error: Error) =>
    logRedisError({ reason: error.message }, "broker persistence Redis error"),
  );
  const persistence = aedesPersistenceRedis({ conn: persistenceConnection });
  const pubConn = connect("broker-emitter-publisher", { enableAutoPipelining: true });
  const subConn = connect("broker-emitter-subscriber");
  // mqemitter-redis bundles its own ioredis major; it only calls methods both majors have.
  const shared = mqemitterRedis({ pubConn, subConn } as unknown as Parameters<typeof mqemitterRedis>[0]);
  // It re-emits its connections' errors here; without a listener they would crash the process.
  shared.state.on("error", (error: Error) => logRedisError({ reason: error.message }, "broker emitter Redis error"));
  const closeShared = () => {
    pubConn.disconnect();
    subConn.disconnect();
  };
  return {
    options: { persistence, mq: new BrokerEmitter(mqemitter(), shared, closeShared, `${prefix}:mqtt/`) },
    close: async () => {
      await persistence.destroy();
    },
  };
}
