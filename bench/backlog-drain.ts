/**
 * Backlog drain: how fast one worker catches up after an outage. A backlog of small jobs (the size
 * an MQTT batch has at a few thousand readings/s spread over many agents) waits in the queue, as
 * after PostgreSQL stopped answering while brokers went on acknowledging up to QUEUE_MAX_DEPTH; then
 * one worker process starts on it, and the time until the queue is empty gives the readings stored
 * per second, for each worker setting asked (`--drain-concurrency=4,32`), on PostgreSQL and Redis.
 */
import { randomBytes, randomUUID } from "node:crypto";
import pg from "pg";
import type { MetricSubmission } from "../src/ingest/submission.ts";
import { statsOf, stop } from "./lib/processes.ts";
import { serviceCpu } from "./lib/service-cpu.ts";
import {
  createDatabase,
  deleteRedisPrefix,
  openBenchQueue,
  REDIS_URL,
  serviceEnv,
  startService,
} from "./lib/targets.ts";

export interface DrainRun {
  /** WORKER_CONCURRENCY of the worker. */
  concurrency: number;
  seconds: number;
  readingsPerSecond: number;
  /** CPU seconds of the worker process per 1,000 readings, and its share of one core. */
  workerCpuPerThousand: number;
  workerCoreShare: number;
  /** The shared PostgreSQL's and Redis's cores over the drain. */
  postgresqlCoreShare: number;
  redisCoreShare: number;
  stored: number;
}

export interface BacklogDrainResult {
  jobs: number;
  readingsPerJob: number;
  tenants: number;
  agents: number;
  runs: DrainRun[];
}

const TENANTS = 10;
const AGENTS = 5000;

function backlogJob(n: number, tenants: string[], readingsPerJob: number, receivedAt: number): MetricSubmission {
  const agent = n % AGENTS;
  return {
    id: randomUUID(),
    tenantId: tenants[agent % tenants.length] as string,
    agentId: `agent-${agent}`,
    source: "mqtt",
    receivedAt,
    metrics: Array.from({ length: readingsPerJob }, (_, i) => ({
      name: `load${i}`,
      value: n,
      ts: receivedAt - 1000,
      dedupeId: `${n}-${i}`,
    })),
  };
}

async function storedReadings(url: string): Promise<number> {
  const client = new pg.Client(url);
  await client.connect();
  try {
    return Number((await client.query<{ n: string }>("SELECT count(*) AS n FROM metrics")).rows[0]?.n);
  } finally {
    await client.end();
  }
}

export async function runBacklogDrain(
  jobs: number,
  readingsPerJob: number,
  concurrencies: number[],
): Promise<BacklogDrainResult> {
  const runs: DrainRun[] = [];
  for (const concurrency of concurrencies) {
    const db = await createDatabase();
    const prefix = `edge-ingest-bench-${randomBytes(4).toString("hex")}`;
    const queue = await openBenchQueue(prefix);
    try {
      const tenants = Array.from({ length: TENANTS }, () => randomUUID());
      const receivedAt = Date.now();
      for (let n = 0; n < jobs; n += 500) {
        await Promise.all(
          Array.from({ length: Math.min(500, jobs - n) }, (_, i) =>
            queue.submit(backlogJob(n + i, tenants, readingsPerJob, receivedAt)),
          ),
        );
      }
      const env = await serviceEnv({
        DATABASE_URL: db.url,
        REDIS_URL,
        REDIS_PREFIX: prefix,
        MIGRATE_ON_START: "false",
        ROLES: "worker",
        WORKER_CONCURRENCY: String(concurrency),
      });
      const worker = await startService("worker", env);
      try {
        const pid = worker.child.pid as number;
        const started = Date.now();
        const cpuBefore = statsOf(pid).cpuSeconds;
        const servicesBefore = await serviceCpu(db.url, REDIS_URL);
        while ((await queue.depth()) > 0) await new Promise((resolve) => setTimeout(resolve, 50));
        const seconds = (Date.now() - started) / 1000;
        const cpu = statsOf(pid).cpuSeconds - cpuBefore;
        const servicesAfter = await serviceCpu(db.url, REDIS_URL);
        const readings = jobs * readingsPerJob;
        runs.push({
          concurrency,
          seconds,
          readingsPerSecond: readings / seconds,
          workerCpuPerThousand: (cpu / readings) * 1000,
          workerCoreShare: cpu / seconds,
          postgresqlCoreShare: (servicesAfter.postgresql - servicesBefore.postgresql) / seconds,
          redisCoreShare: (servicesAfter.redis - servicesBefore.redis) / seconds,
          stored: await storedReadings(db.url),
        });
      } finally {
        await stop(worker);
      }
    } finally {
      await queue.close();
      await db.drop();
      await deleteRedisPrefix(prefix);
    }
  }
  return { jobs, readingsPerJob, tenants: TENANTS, agents: AGENTS, runs };
}
