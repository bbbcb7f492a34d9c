import { Redis } from "ioredis";
import pino from "pino";
import { afterEach, describe, expect, it } from "vitest";
import { startApp } from "../../src/app.ts";
import { loadConfig } from "../../src/config.ts";
import { StartupError } from "../../src/errors.ts";
import { durabilityReport, onlineReplicas } from "../../src/ingest/redis-durability.ts";
import { eventually, request } from "../helpers/http.ts";
import { type OwnRedis, startOwnRedis } from "../helpers/redis-server.ts";
import { createTestDatabase, distributedUnavailable } from "../helpers/services.ts";

const skip = Boolean(await distributedUnavailable());
const info = (aof: 0 | 1, policy: string) =>
  `# Persistence\r\naof_enabled:${aof}\r\n# Memory\r\nmaxmemory_policy:${policy}\r\n`;

describe("onlineReplicas", () => {
  it("lists the replicas a primary reports online, not those still syncing", () => {
    const replication = [
      "# Replication",
      "role:master",
      "connected_slaves:2",
      "slave0:ip=10.0.0.5,port=6380,state=online,offset=42,lag=0",
      "slave1:ip=10.0.0.6,port=6381,state=wait_bgsave,offset=0,lag=0",
      "master_repl_offset:42",
    ].join("\r\n");
    expect(onlineReplicas(replication)).toEqual([{ host: "10.0.0.5", port: 6380 }]);
    expect(onlineReplicas("# Replication\r\nrole:master\r\nconnected_slaves:0\r\n")).toEqual([]);
  });
});

describe("durabilityReport", () => {
  it("passes a Redis with an append-only file that never evicts", () => {
    expect(durabilityReport(info(1, "noeviction"), "aof")).toEqual({
      problems: [],
      warnings: [],
      checks: { persistence: true, eviction: true },
    });
  });

  it("names what to set when Redis keeps no append-only file, unless the loss is accepted", () => {
    const refused = durabilityReport(info(0, "noeviction"), "aof");
    expect(refused.problems).toEqual([expect.stringMatching(/appendonly yes.*REDIS_PERSISTENCE=none/)]);
    const accepted = durabilityReport(info(0, "noeviction"), "none");
    expect(accepted.problems).toEqual([]);
    expect(accepted.warnings).toEqual([expect.stringMatching(/REDIS_PERSISTENCE=none/)]);
  });

  it("refuses a Redis that may evict keys", () => {
    expect(durabilityReport(info(1, "allkeys-lru"), "aof").problems).toEqual([
      expect.stringMatching(/maxmemory-policy is allkeys-lru.*noeviction/),
    ]);
  });
});

describe.skipIf(skip)("a distributed process on its queue's Redis", () => {
  const cleanups: (() => Promise<unknown>)[] = [];
  afterEach(async () => {
    while (cleanups.length) await cleanups.pop()?.();
  });
  const start = async (redis: OwnRedis, env: Record<string, string> = {}) => {
    const db = await createTestDatabase();
    cleanups.push(db.drop);
    return startApp(
      loadConfig({
        HTTP_HOST: "127.0.0.1",
        HTTP_PORT: "0",
        ROLES: "api,worker",
        DATABASE_URL: db.url,
        REDIS_URL: redis.url,
        ADMIN_TOKEN: "d".repeat(40),
        LOG_LEVEL: "silent",
        ...env,
      }),
      pino({ level: "silent" }),
    );
  };

  it("refuses to start on a Redis without persistence, saying what to set", async () => {
    const redis = await startOwnRedis();
    cleanups.push(redis.remove);
    const refused = start(redis);
    await expect(refused).rejects.toBeInstanceOf(StartupError);
    await expect(refused).rejects.toThrow(/appendonly yes.*REDIS_PERSISTENCE=none/);
  });

  it("refuses to start on a Redis that may evict keys", async () => {
    const redis = await startOwnRedis({ appendonly: true, maxmemoryPolicy: "allkeys-lru" });
    cleanups.push(redis.remove);
    await expect(start(redis)).rejects.toThrow(/maxmemory-policy is allkeys-lru/);
  });

  it("with REDIS_MIN_REPLICAS, refuses to start on a replica without persistence, naming it", async () => {
    const redis = await startOwnRedis({ appendonly: true });
    cleanups.push(redis.remove);
    const replica = await startOwnRedis({ args: ["--replicaof", "127.0.0.1", String(redis.port)] });
    cleanups.push(replica.remove);
    const [primaryAdmin, replicaAdmin] = [new Redis(redis.url), new Redis(replica.url)];
    cleanups.push(
      async () => primaryAdmin.disconnect(),
      async () => replicaAdmin.disconnect(),
    );
    await eventually(async () =>
      (await primaryAdmin.info("replication")).includes("state=online") ? true : undefined,
    );
    await expect(start(redis, { REDIS_MIN_REPLICAS: "1" })).rejects.toThrow(
      new RegExp(`replica 127.0.0.1:${replica.port}: Redis has no append-only file`),
    );
    await replicaAdmin.config("SET", "appendonly", "yes");
    const app = await start(redis, { REDIS_MIN_REPLICAS: "1" });
    cleanups.push(() => app.close());
    expect((await request<string>(`${app.httpUrl}/metrics`)).body).toMatch(
      /edge_ingest_redis_check\{check="replicas"\} 1/,
    );
  });

  it("starts on a Redis with an append-only file, and stops being ready when it loses it", async () => {
    const redis = await startOwnRedis({ appendonly: true });
    cleanups.push(redis.remove);
    const app = await start(redis, { REDIS_CHECK_INTERVAL_MS: "100" });
    cleanups.push(() => app.close());
    const url = app.httpUrl;
    expect((await request(`${url}/readyz`)).body.checks.redis).toBe("ok");
    expect((await request<string>(`${url}/metrics`)).body).toMatch(/edge_ingest_redis_check\{check="persistence"\} 1/);

    const admin = new Redis(redis.url);
    cleanups.push(async () => admin.disconnect());
    await admin.config("SET", "appendonly", "no");
    const notReady = await eventually(async () => {
      const answer = await request(`${url}/readyz`);
      return answer.status === 503 ? answer : undefined;
    });
    expect(notReady.body.checks.redis).toMatch(/appendonly yes/);
    expect((await request<string>(`${url}/metrics`)).body).toMatch(/edge_ingest_redis_check\{check="persistence"\} 0/);
    await admin.config("SET", "appendonly", "yes");
    await eventually(async () => ((await request(`${url}/readyz`)).status === 200 ? true : undefined));
  });

  it("starts on a Redis without persistence when the loss is accepted", async () => {
    const redis = await startOwnRedis();
    cleanups.push(redis.remove);
    const app = await start(redis, { REDIS_PERSISTENCE: "none" });
    cleanups.push(() => app.close());
    expect((await request(`${app.httpUrl}/readyz`)).status).toBe(200);
  });
});
