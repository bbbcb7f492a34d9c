/**
 * Noisy neighbour: one agent floods QoS 0 readings as fast as its socket takes them, while an agent
 * of another tenant publishes at a steady QoS 1 rate. Reports the steady agent's PUBACK p50/p99
 * alone and beside the flood, and the rate at which the flooder's readings were accepted against
 * its configured limit (after its burst). edge-ingest distributed: a broker + API process and a
 * worker process, on PostgreSQL and Redis.
 */
import { randomBytes } from "node:crypto";
import pg from "pg";
import { startNode, stop } from "./lib/processes.ts";
import {
  ADMIN_TOKEN,
  agentsFor,
  createDatabase,
  deleteRedisPrefix,
  REDIS_URL,
  serviceEnv,
  startService,
} from "./lib/targets.ts";
import type { FloodResult, LoadPlan, Publisher, SteadyResult } from "./load-generator.ts";

/** The flooder's limit: readings per second, and as its burst. */
const FLOODER_LIMIT = 2000;
/** The steady agent publishes one reading every this many ms. */
const STEADY_INTERVAL_MS = 10;
/** Seconds after the flood starts that are left out of the flooder's rate: its burst. */
const BURST_SECONDS = 2;

export interface NoisyNeighbourResult {
  seconds: number;
  steadyPerSecond: number;
  alone: SteadyResult;
  beside: SteadyResult;
  /** Steady PUBACK p99 beside the flood / alone (target: at most 2). */
  p99Ratio: number | null;
  flooder: {
    limitPerSecond: number;
    offered: number;
    /** Readings accepted per second once its burst was spent. */
    acceptedPerSecond: number;
    /** acceptedPerSecond / limitPerSecond (target: within 10 % of 1). */
    ratioToLimit: number;
  };
}

export async function runNoisyNeighbour(seconds: number): Promise<NoisyNeighbourResult> {
  const db = await createDatabase();
  const prefix = `edge-ingest-bench-${randomBytes(4).toString("hex")}`;
  const shared = { DATABASE_URL: db.url, REDIS_URL, REDIS_PREFIX: prefix, MIGRATE_ON_START: "false" };
  const limits = { AGENT_MAX_READINGS_PER_SECOND: String(FLOODER_LIMIT), AGENT_READINGS_BURST: String(FLOODER_LIMIT) };
  const brokerEnv = await serviceEnv({ ...shared, ...limits, ROLES: "api,broker", ADMIN_TOKEN });
  const processes = [];
  try {
    processes.push(await startService("broker", brokerEnv));
    processes.push(await startService("worker", await serviceEnv({ ...shared, ...limits, ROLES: "worker" })));
    const httpUrl = `http://127.0.0.1:${brokerEnv.HTTP_PORT}`;
    const [flooder] = (await agentsFor(httpUrl, ADMIN_TOKEN, 1)).publishers;
    const steadyTenant = await agentsFor(httpUrl, ADMIN_TOKEN, 1);
    const flooderTenant = flooder?.topic.split("/")[1] as string;
    const url = `mqtt://127.0.0.1:${brokerEnv.MQTT_PORT}`;
    const steady = (idPrefix: string) => {
      const publisher = { ...(steadyTenant.publishers[0] as Publisher), idPrefix };
      return run<SteadyResult>("steady", { mode: "steady", url, publisher, intervalMs: STEADY_INTERVAL_MS, seconds });
    };
    const alone = await steady("alone");
    // The flooder in a process of its own: its writes must not delay the steady agent's client.
    const [beside, flood] = await Promise.all([
      steady("beside"),
      run<FloodResult>("flooder", { mode: "flood", url, publisher: flooder as Publisher, seconds }),
    ]);
    const result = { alone, beside, flooder: flood };
    // Accepted is when the broker read it (received_at); the workers may still be storing.
    const from = result.flooder.startedAt + BURST_SECONDS * 1000;
    const accepted = await acceptedBetween(db.url, flooderTenant, from, result.flooder.endedAt);
    const acceptedPerSecond = accepted / ((result.flooder.endedAt - from) / 1000);
    return {
      seconds,
      steadyPerSecond: 1000 / STEADY_INTERVAL_MS,
      alone: result.alone,
      beside: result.beside,
      p99Ratio: result.alone.p99Ms && result.beside.p99Ms ? result.beside.p99Ms / result.alone.p99Ms : null,
      flooder: {
        limitPerSecond: FLOODER_LIMIT,
        offered: result.flooder.offered,
        acceptedPerSecond,
        ratioToLimit: acceptedPerSecond / FLOODER_LIMIT,
      },
    };
  } finally {
    for (const managed of processes.reverse()) await stop(managed);
    await db.drop();
    await deleteRedisPrefix(prefix);
  }
}

/** Runs the load generator in a process of its own and returns its result line. */
async function run<T>(name: string, plan: LoadPlan): Promise<T> {
  const managed = await startNode(name, "bench/load-generator.ts", [JSON.stringify(plan)], {
    readyText: "RESULT ",
    timeoutMs: 10 * 60_000,
  });
  return JSON.parse(managed.lines.find((l) => l.startsWith("RESULT "))?.slice(7) ?? "{}") as T;
}

/** The tenant's readings the broker read in [from, to), once the queue has drained into the table. */
async function acceptedBetween(url: string, tenantId: string, from: number, to: number): Promise<number> {
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  try {
    const count = async () =>
      Number(
        (
          await client.query(
            "SELECT count(*)::int AS n FROM metrics WHERE tenant_id = $1 AND received_at >= to_timestamp($2 / 1000.0) AND received_at < to_timestamp($3 / 1000.0)",
            [tenantId, from, to],
          )
        ).rows[0]?.n,
      );
    let last = -1;
    let now = await count();
    while (now !== last) {
      await new Promise((resolve) => setTimeout(resolve, 1000));
      last = now;
      now = await count();
    }
    return now;
  } finally {
    await client.end();
  }
}
