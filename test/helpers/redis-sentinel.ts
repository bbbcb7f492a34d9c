import { type ChildProcess, spawn } from "node:child_process";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { Redis } from "ioredis";
import { eventually } from "./http.ts";
import { clientOptions, freePort, type OwnRedis, startOwnRedis, type TestCertificate } from "./redis-server.ts";

export const SENTINEL_NAME = "edge-ingest";

export interface SentinelGroup {
  /** The servers in the order they were started: the first began as the primary. */
  servers: OwnRedis[];
  sentinels: { host: string; port: number }[];
  /** `REDIS_SENTINELS` for the service. */
  sentinelList: string;
  /** The port of the server the sentinels name as primary now. */
  primaryPort(): Promise<number>;
  /** A failover ordered through a sentinel; resolves once the sentinels name the new primary. */
  failover(): Promise<number>;
  /** Stops every process and removes their files. */
  remove(): Promise<void>;
}

/**
 * A primary with append-only file, `replicas` replicas and `sentinels` sentinels (quorum: a
 * majority), each a process of the test's own on a free port. Sentinels notice a dead primary
 * after `downAfterMs`.
 */
export async function startSentinelGroup(
  options: {
    replicas?: number;
    sentinels?: number;
    downAfterMs?: number;
    /** Of the data nodes and the sentinels alike. */
    password?: string;
    /** Every process speaks TLS only, with this certificate. */
    tls?: TestCertificate;
  } = {},
): Promise<SentinelGroup> {
  const secure = { password: options.password, tls: options.tls };
  const primary = await startOwnRedis({ appendonly: true, ...secure });
  const servers = [primary];
  for (let i = 0; i < (options.replicas ?? 1); i++) {
    servers.push(
      await startOwnRedis({ appendonly: true, ...secure, args: ["--replicaof", "127.0.0.1", String(primary.port)] }),
    );
  }
  const dir = await mkdtemp(path.join(os.tmpdir(), "edge-ingest-sentinel-"));
  const count = options.sentinels ?? 3;
  const children: ChildProcess[] = [];
  const sentinels: { host: string; port: number }[] = [];
  for (let i = 0; i < count; i++) {
    const port = await freePort();
    const file = path.join(dir, `sentinel-${port}.conf`);
    await writeFile(
      file,
      [
        ...(options.tls
          ? [
              "port 0",
              `tls-port ${port}`,
              `tls-cert-file ${options.tls.certFile}`,
              `tls-key-file ${options.tls.keyFile}`,
              `tls-ca-cert-file ${options.tls.certFile}`,
              "tls-auth-clients no",
              "tls-replication yes",
            ]
          : [`port ${port}`]),
        "bind 127.0.0.1",
        `dir ${dir}`,
        `sentinel monitor ${SENTINEL_NAME} 127.0.0.1 ${primary.port} ${Math.floor(count / 2) + 1}`,
        `sentinel down-after-milliseconds ${SENTINEL_NAME} ${options.downAfterMs ?? 1000}`,
        `sentinel failover-timeout ${SENTINEL_NAME} 10000`,
        ...(options.password
          ? [
              `requirepass ${JSON.stringify(options.password)}`,
              `sentinel auth-pass ${SENTINEL_NAME} ${JSON.stringify(options.password)}`,
            ]
          : []),
        "",
      ].join("\n"),
    );
    children.push(spawn("redis-server", [file, "--sentinel"], { stdio: "ignore" }));
    sentinels.push({ host: "127.0.0.1", port });
  }
  const ask = async <T>(command: string[]): Promise<T> => {
    const sentinel = new Redis({
      ...sentinels[0],
      // A sentinel that never listens (its configuration refused) fails the start within two seconds.
      retryStrategy: (times: number) => (times > 100 ? null : 20),
      maxRetriesPerRequest: null,
      ...clientOptions(secure),
    });
    sentinel.on("error", () => undefined);
    try {
      return (await sentinel.call(...(command as [string, ...string[]]))) as T;
    } finally {
      sentinel.disconnect();
    }
  };
  const primaryPort = async () =>
    Number((await ask<[string, string]>(["SENTINEL", "get-master-addr-by-name", SENTINEL_NAME]))[1]);
  // Ready once every sentinel has found the replicas and the other sentinels.
  await eventually(async () => {
    const [replicas, others] = await Promise.all([
      ask<string[][]>(["SENTINEL", "replicas", SENTINEL_NAME]),
      ask<string[][]>(["SENTINEL", "sentinels", SENTINEL_NAME]),
    ]);
    const online = replicas.filter((fields) => fields[fields.indexOf("flags") + 1] === "slave");
    return online.length === servers.length - 1 && others.length === count - 1 ? true : undefined;
  }, 30_000);
  return {
    servers,
    sentinels,
    sentinelList: sentinels.map(({ host, port }) => `${host}:${port}`).join(","),
    primaryPort,
    failover: async () => {
      const before = await primaryPort();
      await ask(["SENTINEL", "failover", SENTINEL_NAME]);
      return eventually(async () => {
        const now = await primaryPort();
        return now !== before ? now : undefined;
      }, 30_000);
    },
    remove: async () => {
      for (const child of children) child.kill("SIGKILL");
      for (const server of servers) await server.remove();
      await rm(dir, { recursive: true, force: true });
    },
  };
}
