import { Redis, type RedisOptions } from "ioredis";

/** Where the service's Redis is: one address, or a primary that sentinels name and follow. */
export interface RedisTarget {
  /** Credentials, database and TLS (`rediss:`); without sentinels also the address. */
  url: string;
  sentinels?: readonly { host: string; port: number }[];
  /** The primary's name in the sentinels' configuration. */
  sentinelName?: string;
  sentinelPassword?: string;
  sentinelTls?: boolean;
}

/** Opens one connection to the current primary; each caller adds what its use needs. */
export type RedisConnector = (role: string, options?: RedisOptions) => Redis;

/** `host:port,host:port` (as REDIS_SENTINELS takes it) into addresses; undefined when one is not. */
export function parseSentinels(list: string): { host: string; port: number }[] | undefined {
  const addresses = list.split(",").map((item) => {
    const match = /^\s*(\[[^\]]+\]|[^:\s]+):(\d{1,5})\s*$/.exec(item);
    const port = Number(match?.[2]);
    const host = match?.[1]?.replace(/^\[|\]$/g, "");
    return host && port > 0 && port < 65536 ? { host, port } : undefined;
  });
  return addresses.length > 0 && addresses.every(Boolean) ? (addresses as { host: string; port: number }[]) : undefined;
}

/**
 * The ioredis options every connection of the service shares. With sentinels, a connection asks
 * them for the primary on every (re)connect, and drops its connection when they announce a new one
 * (`failoverDetector`) or when its server answers READONLY (a demoted primary it still reaches), so
 * a failover is followed without a restart; the command that met READONLY is sent again.
 */
export function sharedRedisOptions(target: RedisTarget, role: string): RedisOptions {
  const named: RedisOptions = { connectionName: `edge-ingest:${role}` };
  if (!target.sentinels?.length) return named;
  const tls = new URL(target.url).protocol === "rediss:";
  return {
    ...named,
    sentinels: [...target.sentinels],
    name: target.sentinelName,
    sentinelPassword: target.sentinelPassword,
    ...(target.sentinelTls && { sentinelTLS: {} }),
    enableTLSForSentinelMode: tls,
    failoverDetector: true,
    reconnectOnError: (error) => (error.message.startsWith("READONLY") ? 2 : false),
  };
}

export function redisConnector(target: RedisTarget): RedisConnector {
  return (role, options = {}) => new Redis(target.url, { ...sharedRedisOptions(target, role), ...options });
}

/** One connection to a given server of the deployment (a replica to check), never through the sentinels. */
export function connectToServer(
  target: RedisTarget,
  address: { host: string; port: number },
  role: string,
  options: RedisOptions = {},
): Redis {
  const url = new URL(target.url);
  url.hostname = address.host.includes(":") ? `[${address.host}]` : address.host;
  url.port = String(address.port);
  return new Redis(url.toString(), { connectionName: `edge-ingest:${role}`, ...options });
}
