import { randomBytes } from "node:crypto";
import { mkdtemp, rm } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { Redis } from "ioredis";
import pg from "pg";

/** The shared services this machine runs; tests only ever touch databases and keys they create. */
export const PG_ADMIN_URL = process.env.TEST_PG_ADMIN_URL ?? "postgresql://postgres@127.0.0.1:5432/postgres";
export const REDIS_URL = process.env.TEST_REDIS_URL ?? "redis://127.0.0.1:6379";

export const uniqueId = () => randomBytes(6).toString("hex");

async function probe(): Promise<string | undefined> {
  const reasons: string[] = [];
  const client = new pg.Client({ connectionString: PG_ADMIN_URL, connectionTimeoutMillis: 2000 });
  await client
    .connect()
    .then(() => client.end())
    .catch((error: Error) => reasons.push(`PostgreSQL at ${PG_ADMIN_URL}: ${error.message}`));
  const redis = new Redis(REDIS_URL, { lazyConnect: true, maxRetriesPerRequest: 0, retryStrategy: () => null });
  await redis
    .connect()
    .then(() => redis.quit())
    .catch((error: Error) => reasons.push(`Redis at ${REDIS_URL}: ${error.message}`));
  return reasons.length > 0 ? reasons.join("; ") : undefined;
}

/**
 * Why the distributed tests cannot run here, or undefined when they can. Under CI=true a missing
 * service is an error, not a skip.
 */
export async function distributedUnavailable(): Promise<string | undefined> {
  const reason = await probe();
  if (reason && process.env.CI === "true") throw new Error(`CI=true but the distributed tests cannot run: ${reason}`);
  if (reason) console.warn(`skipping distributed tests: ${reason}`);
  return reason;
}

/** A database of the test's own on the shared PostgreSQL, dropped by `drop()`. */
export async function createTestDatabase(): Promise<{ url: string; drop(): Promise<void> }> {
  const name = `edge_ingest_test_${uniqueId()}`;
  const admin = new pg.Client({ connectionString: PG_ADMIN_URL });
  await admin.connect();
  await admin.query(`CREATE DATABASE ${name}`);
  await admin.end();
  const url = new URL(PG_ADMIN_URL);
  url.pathname = `/${name}`;
  return {
    url: url.toString(),
    drop: async () => {
      const client = new pg.Client({ connectionString: PG_ADMIN_URL });
      await client.connect();
      await client.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`);
      await client.end();
    },
  };
}

/** Deletes every key under a test's own prefix on the shared Redis. */
export async function deleteRedisPrefix(prefix: string, redisUrl = REDIS_URL): Promise<void> {
  const redis = new Redis(redisUrl);
  let cursor = "0";
  do {
    const [next, keys] = await redis.scan(cursor, "MATCH", `${prefix}:*`, "COUNT", 1000);
    if (keys.length > 0) await redis.del(...keys);
    cursor = next;
  } while (cursor !== "0");
  await redis.quit();
}

export async function tempDir(): Promise<{ dir: string; remove(): Promise<void> }> {
  const dir = await mkdtemp(path.join(os.tmpdir(), "edge-ingest-test-"));
  return { dir, remove: () => rm(dir, { recursive: true, force: true }) };
}

/** Listeners of a service under test: loopback, every port chosen by the system. */
export const OWN_PORTS = {
  HTTP_HOST: "127.0.0.1",
  HTTP_PORT: "0",
  MQTT_HOST: "127.0.0.1",
  MQTT_PORT: "0",
  MQTT_WS_PORT: "0",
} as const;

/**
 * For a test file's Redis-backed stores: one connection to the shared Redis (undefined, with `skip`,
 * where it is unavailable) and a fresh key prefix per store; every key under them goes after the file.
 */
export async function redisForStores(): Promise<{ skip: boolean; redis: Redis; prefix(): string }> {
  const { afterAll } = await import("vitest");
  const skip = Boolean(await distributedUnavailable());
  const redis = new Redis(REDIS_URL, { lazyConnect: true });
  const prefixes: string[] = [];
  afterAll(async () => {
    for (const prefix of prefixes) await deleteRedisPrefix(prefix);
    redis.disconnect();
  });
  return {
    skip,
    redis,
    prefix: () => {
      const prefix = `edge-ingest-test-${uniqueId()}`;
      prefixes.push(prefix);
      return prefix;
    },
  };
}
