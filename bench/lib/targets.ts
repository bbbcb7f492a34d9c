import { execFileSync } from "node:child_process";
import { randomBytes, randomUUID } from "node:crypto";
import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { Redis } from "ioredis";
import pino from "pino";
import { BullmqSubmissionQueue } from "../../src/ingest/bullmq-queue.ts";
import { redisConnector } from "../../src/redis/connection.ts";
import { migratePostgres } from "../../src/store/database.ts";
import { startOwnRedis } from "../../test/helpers/redis-server.ts";
import { createTestDatabase, deleteRedisPrefix, PG_ADMIN_URL, REDIS_URL } from "../../test/helpers/services.ts";
import type { Publisher } from "../load-generator.ts";
import { freePort, type Managed, ROOT, start, startNode, stop } from "./processes.ts";
import { measurePglite, measurePostgres, type RowStats } from "./rows.ts";

export { deleteRedisPrefix, PG_ADMIN_URL, REDIS_URL };
export const ADMIN_TOKEN = randomBytes(24).toString("hex");

/** A system under test, started on free ports, with the means to count what it stored. */
export interface Target {
  mqttUrl: string;
  publishers: Publisher[];
  /** Every process of the target, for CPU and memory figures. */
  processes: Managed[];
  /** Whether it runs on the shared PostgreSQL and Redis, whose CPU then counts as its own. */
  usesSharedServices?: true;
  /** The Redis it runs on when not the shared one (its CPU is counted as Redis's). */
  redisUrl?: string;
  /** The Prometheus endpoint of an edge-ingest target, read before it stops. */
  metricsUrl?: string;
  /**
   * Waits for the stored rows and counts them, calling `beforeStop` once the work is done, before the
   * counting queries and before any process of the target stops (embedded must stop to free its
   * database). Undefined: stores nothing.
   */
  measure?: (expected: number, ackedFile: string | undefined, beforeStop: () => Promise<void>) => Promise<RowStats>;
  close(): Promise<void>;
}

export type TargetName =
  | "aedes-bare"
  | "seed-architecture"
  | "edge-ingest-embedded"
  | "edge-ingest-distributed"
  | "edge-ingest-no-database"
  | "edge-ingest-unreplicated"
  | "edge-ingest-replicated"
  | "edge-ingest-2-brokers"
  | "edge-ingest-2-workers"
  | "edge-ingest-2-brokers-2-workers";

const anonymousPublishers = (count: number, tenantId: string): Publisher[] =>
  Array.from({ length: count }, (_, i) => ({
    topic: `metrics/${tenantId}/agent-${i}/load`,
    idPrefix: `p${i}`,
  }));

/** The service's queue under a benchmark's Redis prefix: to fill it, or to wait for it to empty. */
export function openBenchQueue(prefix: string): Promise<BullmqSubmissionQueue> {
  return BullmqSubmissionQueue.open({
    connect: redisConnector({ url: REDIS_URL }),
    prefix,
    attempts: 3,
    backoffMs: 500,
    logger: pino({ level: "silent" }),
  });
}

/** A database of the benchmark's own, migrated. */
export async function createDatabase(): Promise<{ url: string; drop(): Promise<void> }> {
  const db = await createTestDatabase();
  await migratePostgres(db.url, pino({ level: "silent" }));
  return db;
}

function postgresMeasure(url: string, tenantId: string): NonNullable<Target["measure"]> {
  return (expected, ackedFile, beforeStop) => measurePostgres(url, tenantId, expected, ackedFile, beforeStop);
}

async function closeAll(processes: Managed[]): Promise<void> {
  for (const managed of [...processes].reverse()) await stop(managed);
}

/** Environment of an edge-ingest process on free ports. */
export async function serviceEnv(extra: Record<string, string>): Promise<Record<string, string>> {
  return {
    HTTP_HOST: "127.0.0.1",
    HTTP_PORT: String(await freePort()),
    MQTT_HOST: "127.0.0.1",
    MQTT_PORT: String(await freePort()),
    MQTT_WS_PORT: "0",
    MQTT_MAX_CONNECTIONS: "100000",
    LOG_LEVEL: "info",
    // The machine's Redis keeps nothing on disk (as in the seed architecture it is compared with).
    REDIS_PERSISTENCE: "none",
    // The pipeline's speed is measured, not the rate limits (the noisy-neighbour scenario sets its own):
    // by default one tenant's ten agents would be held to 1,000 readings/s each.
    AGENT_MAX_READINGS_PER_SECOND: "1000000",
    AGENT_READINGS_BURST: "1000000",
    AGENT_MAX_BYTES_PER_SECOND: "1000000000",
    AGENT_BYTES_BURST: "1000000000",
    TENANT_MAX_READINGS_PER_SECOND: "10000000",
    TENANT_READINGS_BURST: "10000000",
    // The idle-connections scenario holds thousands of one tenant's connections, opened at once.
    TENANT_MAX_CONNECTIONS: "1000000",
    MQTT_MAX_CONNECTION_RATE: "1000000",
    MQTT_CONNECTION_RATE_BURST: "1000000",
    ...Object.fromEntries(
      (process.env.BENCH_SERVICE_ENV?.split(" ").filter(Boolean) ?? []).map((pair) => [
        pair.slice(0, pair.indexOf("=")),
        pair.slice(pair.indexOf("=") + 1),
      ]),
    ),
    ...extra,
  };
}

let built = false;

/** Node options of a process running edge-ingest's code: `--profile`'s and `--service-node-args`. */
function serviceNodeArgs(name: string): string[] {
  const profileDir = process.env.BENCH_PROFILE_DIR;
  return [
    ...(profileDir ? ["--cpu-prof", `--cpu-prof-dir=${path.join(profileDir, name)}`] : []),
    ...(process.env.BENCH_SERVICE_NODE_ARGS?.split(" ").filter(Boolean) ?? []),
  ];
}

/**
 * The service as it ships: compiled once per run (`npm run build`), run without a TypeScript
 * loader; `from: "sources"` runs src/ through tsx instead, for comparison.
 */
export function startService(
  name: string,
  env: Record<string, string>,
  options: { from?: "build" | "sources" } = {},
): Promise<Managed> {
  const nodeArgs = serviceNodeArgs(name);
  const ready = { env, readyText: "edge-ingest started" };
  if (options.from === "sources") return startNode(name, "src/main.ts", ["serve"], { ...ready, nodeArgs });
  if (!built) {
    execFileSync(process.execPath, [path.join(ROOT, "scripts/build.mjs")], { stdio: "inherit" });
    built = true;
  }
  return start(name, process.execPath, [...nodeArgs, "dist/main.js", "serve"], ready);
}

/** A POST to the admin API, its JSON answer, or an error naming the route. */
export function adminCaller(httpUrl: string, adminToken: string) {
  return async (route: string, body: unknown): Promise<Record<string, string>> => {
    const response = await fetch(`${httpUrl}${route}`, {
      method: "POST",
      headers: { authorization: `Bearer ${adminToken}`, "content-type": "application/json" },
      body: JSON.stringify(body),
    });
    if (!response.ok) throw new Error(`${route}: ${response.status} ${await response.text()}`);
    return (await response.json()) as Record<string, string>;
  };
}

/** A tenant with one agent per publisher, made through the admin API. */
export async function agentsFor(
  httpUrl: string,
  adminToken: string,
  count: number,
): Promise<{ tenantId: string; publishers: Publisher[] }> {
  const call = adminCaller(httpUrl, adminToken);
  const tenant = await call("/api/v1/admin/tenants", { name: "bench" });
  const tenantId = tenant.id as string;
  const publishers: Publisher[] = [];
  for (let i = 0; i < count; i++) {
    const agent = await call(`/api/v1/admin/tenants/${tenantId}/agents`, { agent_id: `agent-${i}` });
    publishers.push({
      username: agent.username,
      password: agent.password,
      topic: `metrics/${tenantId}/agent-${i}/load`,
      idPrefix: `p${i}`,
    });
  }
  return { tenantId, publishers };
}

/**
 * The broker (with the API) as it ships, on its own database and Redis prefix, and a worker: the
 * service's, or the queue drain that completes every job without writing it (nothing is stored,
 * so nothing is measured but the acknowledgements).
 */
async function replicaOnline(primaryUrl: string): Promise<void> {
  const redis = new Redis(primaryUrl);
  try {
    while (!(await redis.info("replication")).includes("state=online")) {
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
  } finally {
    redis.disconnect();
  }
}

/**
 * The distributed service: brokers (the first with the API) and workers (one of each unless
 * `scale` says), the publishers spread over the brokers, on the shared Redis, or with `minReplicas`
 * on a Redis primary and replica of its own (both with an append-only file), where an
 * acknowledgement waits for that many replicas.
 */
async function startDistributed(
  publisherCount: number,
  worker: "service" | "queue-drain",
  replicated?: { minReplicas: number },
  scale: { brokers: number; workers: number } = { brokers: 1, workers: 1 },
): Promise<Target> {
  const db = await createDatabase();
  const prefix = `edge-ingest-bench-${randomBytes(4).toString("hex")}`;
  const processes: Managed[] = [];
  const primary = replicated && (await startOwnRedis({ appendonly: true }));
  const replica =
    primary && (await startOwnRedis({ appendonly: true, args: ["--replicaof", "127.0.0.1", String(primary.port)] }));
  // Until the replica has synchronised, nothing could be acknowledged.
  if (primary) await replicaOnline(primary.url);
  const cleanup = async () => {
    await closeAll(processes);
    await db.drop();
    await deleteRedisPrefix(prefix);
    await replica?.remove();
    await primary?.remove();
  };
  const shared = {
    DATABASE_URL: db.url,
    REDIS_URL: primary?.url ?? REDIS_URL,
    REDIS_PREFIX: prefix,
    MIGRATE_ON_START: "false",
    ...(replicated && { REDIS_PERSISTENCE: "aof", REDIS_MIN_REPLICAS: String(replicated.minReplicas) }),
  };
  const brokerEnv = await serviceEnv({ ...shared, ROLES: "api,broker", ADMIN_TOKEN });
  const mqttUrls: string[] = [];
  const numbered = (name: string, i: number) => (i === 0 ? name : `${name}-${i + 1}`);
  try {
    for (let i = 0; i < scale.brokers; i++) {
      const env = i === 0 ? brokerEnv : await serviceEnv({ ...shared, ROLES: "broker" });
      processes.push(await startService(numbered("broker", i), env));
      mqttUrls.push(`mqtt://127.0.0.1:${env.MQTT_PORT}`);
    }
    for (let i = 0; i < scale.workers; i++) {
      const workerEnv = await serviceEnv({ ...shared, ROLES: "worker" });
      processes.push(
        worker === "service"
          ? await startService(numbered("worker", i), workerEnv)
          : await startNode("queue-drain", "bench/targets/queue-drain.ts", [], {
              env: workerEnv,
              readyText: "READY",
              // The production worker's code: measured as the service's processes are.
              nodeArgs: serviceNodeArgs("queue-drain"),
            }),
      );
    }
  } catch (error) {
    await cleanup();
    throw error;
  }
  const { tenantId, publishers } = await agentsFor(
    `http://127.0.0.1:${brokerEnv.HTTP_PORT}`,
    ADMIN_TOKEN,
    publisherCount,
  );
  return {
    mqttUrl: `mqtt://127.0.0.1:${brokerEnv.MQTT_PORT}`,
    metricsUrl: `http://127.0.0.1:${brokerEnv.HTTP_PORT}/metrics`,
    publishers: publishers.map((publisher, i) => ({ ...publisher, url: mqttUrls[i % mqttUrls.length] })),
    processes,
    usesSharedServices: true,
    ...(primary && { redisUrl: primary.url }),
    ...(worker === "service" && { measure: postgresMeasure(db.url, tenantId) }),
    close: cleanup,
  };
}

export async function startTarget(name: TargetName, publisherCount: number): Promise<Target> {
  switch (name) {
    case "aedes-bare": {
      const broker = await startNode("aedes-bare", "bench/targets/aedes-bare.ts", [], { readyText: "READY" });
      const port = broker.lines.find((l) => l.startsWith("READY"))?.split(" ")[1];
      return {
        mqttUrl: `mqtt://127.0.0.1:${port}`,
        publishers: anonymousPublishers(publisherCount, randomUUID()),
        processes: [broker],
        close: () => closeAll([broker]),
      };
    }

    case "seed-architecture": {
      const db = await createDatabase();
      const prefix = `edge-ingest-bench-${randomBytes(4).toString("hex")}`;
      const dir = await mkdtemp(path.join(os.tmpdir(), "edge-ingest-bench-"));
      const port = await freePort();
      const config = path.join(dir, "mosquitto.conf");
      // The seed deployment: anonymous Mosquitto with a deep queue, no persistence.
      await writeFile(
        config,
        [
          `listener ${port} 127.0.0.1`,
          "allow_anonymous true",
          "persistence false",
          "max_queued_messages 100000",
          "log_dest stderr",
          "log_type information",
        ].join("\n"),
      );
      const processes: Managed[] = [];
      const cleanup = async () => {
        await closeAll(processes);
        await db.drop();
        await deleteRedisPrefix(prefix);
        await rm(dir, { recursive: true, force: true });
      };
      try {
        processes.push(await start("mosquitto", "mosquitto", ["-c", config], { readyText: "listen socket on port" }));
        const shared = { DATABASE_URL: db.url, REDIS_URL, REDIS_PREFIX: prefix };
        processes.push(
          await startService("worker", await serviceEnv({ ...shared, ROLES: "worker", MIGRATE_ON_START: "false" })),
        );
        processes.push(
          await startNode("bridge", "bench/targets/bridge.ts", [], {
            env: { MQTT_URL: `mqtt://127.0.0.1:${port}`, REDIS_URL, REDIS_PREFIX: prefix },
            readyText: "READY",
          }),
        );
      } catch (error) {
        await cleanup();
        throw error;
      }
      const tenantId = randomUUID();
      return {
        mqttUrl: `mqtt://127.0.0.1:${port}`,
        publishers: anonymousPublishers(publisherCount, tenantId),
        processes,
        usesSharedServices: true,
        measure: postgresMeasure(db.url, tenantId),
        close: cleanup,
      };
    }

    case "edge-ingest-distributed":
      return startDistributed(publisherCount, "service");

    case "edge-ingest-no-database":
      return startDistributed(publisherCount, "queue-drain");

    case "edge-ingest-unreplicated":
      return startDistributed(publisherCount, "service", { minReplicas: 0 });

    case "edge-ingest-replicated":
      return startDistributed(publisherCount, "service", { minReplicas: 1 });

    case "edge-ingest-2-brokers":
      return startDistributed(publisherCount, "service", undefined, { brokers: 2, workers: 1 });

    case "edge-ingest-2-workers":
      return startDistributed(publisherCount, "service", undefined, { brokers: 1, workers: 2 });

    case "edge-ingest-2-brokers-2-workers":
      return startDistributed(publisherCount, "service", undefined, { brokers: 2, workers: 2 });

    case "edge-ingest-embedded": {
      const dir = await mkdtemp(path.join(os.tmpdir(), "edge-ingest-bench-"));
      const env = await serviceEnv({ DATA_DIR: dir });
      const service = await startService("edge-ingest", env);
      const adminToken = (await readFile(path.join(dir, "admin-token"), "utf8")).trim();
      const { tenantId, publishers } = await agentsFor(`http://127.0.0.1:${env.HTTP_PORT}`, adminToken, publisherCount);
      return {
        mqttUrl: `mqtt://127.0.0.1:${env.MQTT_PORT}`,
        metricsUrl: `http://127.0.0.1:${env.HTTP_PORT}/metrics`,
        publishers,
        processes: [service],
        // Acknowledged means committed here, so stopping first loses nothing and frees the database.
        measure: async (_expected, ackedFile, beforeStop) => {
          await beforeStop();
          await stop(service);
          return measurePglite(dir, tenantId, ackedFile);
        },
        close: async () => {
          await stop(service);
          await rm(dir, { recursive: true, force: true });
        },
      };
    }
  }
}
