/**
 * Noisy neighbour: agents of one tenant (or several) flood QoS 0 readings as fast as their sockets
 * take them, while an agent of another tenant publishes at a steady QoS 1 rate. Reports the steady
 * agent's PUBACK p50/p99 alone and beside floods of each number of agents asked (`--flooders=1,8,32`,
 * spread over `--flooder-tenants=N` tenants), and the rate at which the flood was accepted against the
 * budget the limits give it (after its burst). Every limit is the service's default: what a tenant
 * inside its default budget costs the others. edge-ingest distributed: a broker + API process and a
 * worker process, on PostgreSQL and Redis.
 */
import { randomBytes } from "node:crypto";
import pg from "pg";
import { loadConfig } from "../src/config.ts";
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

/** The steady agent publishes one reading every this many ms. */
const STEADY_INTERVAL_MS = 10;

export interface FloodBeside {
  /** Flooding agents, and the tenants they belong to (spread evenly). */
  agents: number;
  tenants: number;
  beside: SteadyResult;
  /** Steady PUBACK p99 beside the flood / alone (target: at most 2). */
  p99Ratio: number | null;
  offered: number;
  /** What the limits let the flood have: its agents' rates, capped by its tenants' budgets. */
  budgetPerSecond: number;
  /** Readings accepted per second once the bursts were spent. */
  acceptedPerSecond: number;
  ratioToBudget: number;
}

export interface NoisyNeighbourResult {
  seconds: number;
  steadyPerSecond: number;
  /** The service's default limits, which every agent here runs under. */
  limits: { agentPerSecond: number; agentBurst: number; tenantPerSecond: number; tenantBurst: number };
  alone: SteadyResult;
  floods: FloodBeside[];
}

export async function runNoisyNeighbour(
  seconds: number,
  flooderCounts: number[],
  flooderTenants: number,
): Promise<NoisyNeighbourResult> {
  const defaults = loadConfig({});
  const limits = {
    agentPerSecond: defaults.AGENT_MAX_READINGS_PER_SECOND,
    agentBurst: defaults.AGENT_READINGS_BURST,
    tenantPerSecond: defaults.TENANT_MAX_READINGS_PER_SECOND,
    tenantBurst: defaults.TENANT_READINGS_BURST,
  };
  const limitEnv = {
    AGENT_MAX_READINGS_PER_SECOND: String(limits.agentPerSecond),
    AGENT_READINGS_BURST: String(limits.agentBurst),
    AGENT_MAX_BYTES_PER_SECOND: String(defaults.AGENT_MAX_BYTES_PER_SECOND),
    AGENT_BYTES_BURST: String(defaults.AGENT_BYTES_BURST),
    TENANT_MAX_READINGS_PER_SECOND: String(limits.tenantPerSecond),
    TENANT_READINGS_BURST: String(limits.tenantBurst),
  };
  // The flood's first seconds run on its bursts, left out of its rate.
  const burstSeconds = Math.ceil(
    Math.max(limits.agentBurst / limits.agentPerSecond, limits.tenantBurst / limits.tenantPerSecond),
  );
  const db = await createDatabase();
  const prefix = `edge-ingest-bench-${randomBytes(4).toString("hex")}`;
  const shared = { DATABASE_URL: db.url, REDIS_URL, REDIS_PREFIX: prefix, MIGRATE_ON_START: "false" };
  const brokerEnv = await serviceEnv({ ...shared, ...limitEnv, ROLES: "api,broker", ADMIN_TOKEN });
  const processes = [];
  try {
    processes.push(await startService("broker", brokerEnv));
    processes.push(await startService("worker", await serviceEnv({ ...shared, ...limitEnv, ROLES: "worker" })));
    const httpUrl = `http://127.0.0.1:${brokerEnv.HTTP_PORT}`;
    const steadyTenant = await agentsFor(httpUrl, ADMIN_TOKEN, 1);
    const url = `mqtt://127.0.0.1:${brokerEnv.MQTT_PORT}`;
    const steady = (idPrefix: string) => {
      const publisher = { ...(steadyTenant.publishers[0] as Publisher), idPrefix };
      return run<SteadyResult>("steady", { mode: "steady", url, publisher, intervalMs: STEADY_INTERVAL_MS, seconds });
    };
    const alone = await steady("alone");
    const floods: FloodBeside[] = [];
    for (const agents of flooderCounts) {
      const tenants = Math.min(flooderTenants, agents);
      const flooderTenantIds: string[] = [];
      const publishers: Publisher[] = [];
      for (let t = 0; t < tenants; t++) {
        const own = Math.floor(agents / tenants) + (t < agents % tenants ? 1 : 0);
        const tenant = await agentsFor(httpUrl, ADMIN_TOKEN, own);
        flooderTenantIds.push(tenant.tenantId);
        publishers.push(...tenant.publishers.map((p) => ({ ...p, idPrefix: `${agents}-${p.idPrefix}` })));
      }
      // The flooders in a process of their own: their writes must not delay the steady agent's client.
      const [beside, flood] = await Promise.all([
        steady(`beside-${agents}`),
        run<FloodResult>("flooders", { mode: "flood", url, publishers, seconds }),
      ]);
      // Accepted is when the broker read it (received_at); the workers may still be storing.
      const from = flood.startedAt + burstSeconds * 1000;
      const accepted = await acceptedBetween(db.url, flooderTenantIds, from, flood.endedAt);
      const acceptedPerSecond = accepted / ((flood.endedAt - from) / 1000);
      const budgetPerSecond = Math.min(agents * limits.agentPerSecond, tenants * limits.tenantPerSecond);
      floods.push({
        agents,
        tenants,
        beside,
        p99Ratio: alone.p99Ms && beside.p99Ms ? beside.p99Ms / alone.p99Ms : null,
        offered: flood.offered,
        budgetPerSecond,
        acceptedPerSecond,
        ratioToBudget: acceptedPerSecond / budgetPerSecond,
      });
    }
    return { seconds, steadyPerSecond: 1000 / STEADY_INTERVAL_MS, limits, alone, floods };
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

/** The tenants' readings the broker read in [from, to), once the queue has drained into the table. */
async function acceptedBetween(url: string, tenantIds: string[], from: number, to: number): Promise<number> {
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  try {
    const count = async () =>
      Number(
        (
          await client.query(
            "SELECT count(*)::int AS n FROM metrics WHERE tenant_id = ANY($1::uuid[]) AND received_at >= to_timestamp($2 / 1000.0) AND received_at < to_timestamp($3 / 1000.0)",
            [tenantIds, from, to],
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
