import tls from "node:tls";
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
  /** PEM certificates trusted besides the system's, for TLS to Redis and to the sentinels. */
  tlsCa?: string;
}

/** TLS options for a connection that speaks TLS: the extra CAs, if any, beside Node's own. */
function tlsOptions(target: RedisTarget): { ca?: string[] } {
  return target.tlsCa ? { ca: [...tls.rootCertificates, target.tlsCa] } : {};
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
 * The ioredis options every connection of the service shares. A server that answers READONLY is a
 * demoted primary (a managed Redis that failed over behind the same address, or a sentinel
 * failover): the connection is made again, to whatever the address or the sentinels name now, and
 * the command sent again. With sentinels, a connection also asks them for the primary on every
 * (re)connect and drops its connection the moment they announce a new one (`failoverDetector`):
 * the old primary takes writes until the sentinels demote it, and what it took then is discarded.
 */
export function sharedRedisOptions(target: RedisTarget, role: string): RedisOptions {
  const secure = new URL(target.url).protocol === "rediss:";
  const common: RedisOptions = {
    connectionName: `edge-ingest:${role}`,
    reconnectOnError: (error) => (error.message.startsWith("READONLY") ? 2 : false),
    ...(secure && { tls: tlsOptions(target) }),
  };
  if (!target.sentinels?.length) return common;
  return {
    ...common,
    sentinels: [...target.sentinels],
    name: target.sentinelName,
    sentinelPassword: target.sentinelPassword,
    ...(target.sentinelTls && { sentinelTLS: tlsOptions(target) }),
    enableTLSForSentinelMode: secure,
    failoverDetector: true,
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
  return redisConnector({ ...target, url: url.toString(), sentinels: undefined })(role, options);
}
