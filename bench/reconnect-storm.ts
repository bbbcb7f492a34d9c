/**
 * Reconnect storm: a fleet of agents of several tenants on one broker (with the API; a worker
 * beside it, PostgreSQL and Redis), each publishing a QoS 1 reading every few seconds. The broker is
 * SIGKILLed and started again; every device reconnects at once (a random pause of up to `jitterMs`
 * between attempts, an attempt abandoned after `connackTimeoutMs` without a CONNACK) and resends
 * what was not acknowledged. Reports when the devices were back, counted from the moment the new
 * broker was listening, how many attempts timed out or were refused, what the kernel's accept queue
 * dropped, and whether every acknowledged reading was stored once. Each variant asked runs the whole
 * storm on a fresh deployment: `settings` are the broker's environment for that variant.
 */
import { randomBytes } from "node:crypto";
import { readFileSync } from "node:fs";
import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import pg from "pg";
import { loadConfig } from "../src/config.ts";
import { type Managed, percentile, startNode, stop } from "./lib/processes.ts";
import {
  ADMIN_TOKEN,
  agentsFor,
  createDatabase,
  deleteRedisPrefix,
  openBenchQueue,
  REDIS_URL,
  serviceEnv,
  startService,
} from "./lib/targets.ts";
import type { Publisher } from "./load-generator.ts";
import type { StormPlan, StormResult } from "./storm-clients.ts";

export interface StormOptions {
  agents: number;
  tenants: number;
  /** The broker's MQTT_MAX_CONNECTION_RATE (its burst is twice that, as the defaults have it). */
  connectionRate: number;
  intervalMs: number;
  jitterMs: number;
  connackTimeoutMs: number;
}

export interface StormVariant {
  name: string;
  settings: Record<string, string>;
  firstConnectSeconds: number;
  /** From SIGKILL until the new broker said it had started. */
  restartSeconds: number;
  /** Seconds after the new broker listened at which devices were back. */
  backP50: number | null;
  backP90: number | null;
  backMax: number | null;
  devicesBack: number;
  attempts: number;
  timeouts: number;
  refusals: Record<string, number>;
  listenOverflows: number;
  delayedByRateLimit: number;
  refusedByRateLimit: number;
  offered: number;
  acknowledged: number;
  acknowledgedNotStored: number;
  duplicates: number;
}

export interface ReconnectStormResult extends StormOptions {
  variants: StormVariant[];
}

/** The kernel's count of connections dropped because a listener's accept queue was full. */
function listenOverflows(): number {
  const lines = readFileSync("/proc/net/netstat", "utf8").split("\n");
  const header = lines.findIndex((line) => line.startsWith("TcpExt:"));
  const names = (lines[header] ?? "").split(/\s+/);
  const values = (lines[header + 1] ?? "").split(/\s+/);
  return Number(values[names.indexOf("ListenOverflows")] ?? 0);
}

async function metricSum(httpUrl: string, name: string, labels = ""): Promise<number> {
  const text = await (await fetch(`${httpUrl}/metrics`)).text();
  return text
    .split("\n")
    .filter((line) => line.startsWith(name) && line.includes(labels))
    .reduce((sum, line) => sum + Number(line.split(" ").pop()), 0);
}

async function stored(databaseUrl: string): Promise<{ ids: Set<string>; duplicates: number }> {
  const client = new pg.Client(databaseUrl);
  await client.connect();
  try {
    const { rows } = await client.query<{ dedupe_id: string; n: string }>(
      "SELECT dedupe_id, count(*) AS n FROM metrics WHERE dedupe_id IS NOT NULL GROUP BY tenant_id, dedupe_id",
    );
    return {
      ids: new Set(rows.map((row) => row.dedupe_id)),
      duplicates: rows.reduce((sum, row) => sum + Number(row.n) - 1, 0),
    };
  } finally {
    await client.end();
  }
}

async function runVariant(
  options: StormOptions,
  name: string,
  settings: Record<string, string>,
): Promise<StormVariant> {
  const db = await createDatabase();
  const prefix = `edge-ingest-bench-${randomBytes(4).toString("hex")}`;
  const scratch = await mkdtemp(path.join(os.tmpdir(), "edge-ingest-storm-"));
  const shared = { DATABASE_URL: db.url, REDIS_URL, REDIS_PREFIX: prefix, MIGRATE_ON_START: "false" };
  // The connection limits are the service's (the other benchmarks lift them): a storm is what they are for.
  const brokerEnv = await serviceEnv({
    ...shared,
    ROLES: "api,broker",
    ADMIN_TOKEN,
    MQTT_MAX_CONNECTION_RATE: String(options.connectionRate),
    MQTT_CONNECTION_RATE_BURST: String(2 * options.connectionRate),
    TENANT_MAX_CONNECTIONS: String(loadConfig({}).TENANT_MAX_CONNECTIONS),
    ...settings,
  });
  const httpUrl = `http://127.0.0.1:${brokerEnv.HTTP_PORT}`;
  let broker: Managed | undefined;
  let worker: Managed | undefined;
  let clients: Managed | undefined;
  try {
    broker = await startService("broker", brokerEnv);
    worker = await startService("worker", await serviceEnv({ ...shared, ROLES: "worker" }));
    const perTenant = Math.ceil(options.agents / options.tenants);
    const tenants = await Promise.all(
      Array.from({ length: options.tenants }, () => agentsFor(httpUrl, ADMIN_TOKEN, perTenant)),
    );
    const publishers: Publisher[] = tenants
      .flatMap((tenant, t) => tenant.publishers.map((p) => ({ ...p, idPrefix: `t${t}-${p.idPrefix}` })))
      .slice(0, options.agents);
    const ackedFile = path.join(scratch, "acked");
    const plan: StormPlan = {
      url: `mqtt://127.0.0.1:${brokerEnv.MQTT_PORT}`,
      publishers,
      intervalMs: options.intervalMs,
      jitterMs: options.jitterMs,
      connackTimeoutMs: options.connackTimeoutMs,
      settleMs: 5000,
      ackedFile,
    };
    const planFile = path.join(scratch, "plan.json");
    await writeFile(planFile, JSON.stringify(plan));
    clients = await startNode("storm-clients", "bench/storm-clients.ts", [planFile], {
      readyText: "CONNECTED ",
      timeoutMs: 10 * 60_000,
    });
    const firstConnectSeconds = JSON.parse(
      clients.lines.find((line) => line.startsWith("CONNECTED "))?.slice(10) ?? "{}",
    ).seconds as number;
    // Steady state: every device has published a few times.
    await new Promise((resolve) => setTimeout(resolve, 3 * options.intervalMs));

    const overflowsBefore = listenOverflows();
    const killedAt = Date.now();
    broker.child.kill("SIGKILL");
    await new Promise((resolve) => broker?.child.once("exit", resolve));
    broker = await startService("broker", brokerEnv);
    const listeningAt = Date.now();

    const { child, lines } = clients;
    await new Promise<void>((resolve) => {
      if (lines.includes("RESULT")) resolve();
      // "close", not "exit": the result line may still be in the pipe when the process has exited.
      else child.once("close", () => resolve());
    });
    if (!lines.includes("RESULT")) {
      const how = `exit ${child.exitCode} ${child.signalCode ?? ""}`;
      throw new Error(`the storm's clients ended without a result (${how}): ${clients.errors.join("\n").slice(-3000)}`);
    }
    const result = JSON.parse(await readFile(`${ackedFile}.result.json`, "utf8")) as StormResult;
    const overflows = listenOverflows() - overflowsBefore;

    // Everything acknowledged must be stored: wait for the queue to empty, then count.
    const queue = await openBenchQueue(prefix);
    try {
      while ((await queue.depth()) > 0) await new Promise((resolve) => setTimeout(resolve, 200));
    } finally {
      await queue.close();
    }
    const acked = (await readFile(ackedFile, "utf8")).split("\n").filter(Boolean);
    const rows = await stored(db.url);
    const back = result.reconnects.map((r) => (r.backAt - listeningAt) / 1000).sort((a, b) => a - b);
    const refusals: Record<string, number> = {};
    for (const r of result.reconnects) {
      for (const [code, n] of Object.entries(r.refusals)) refusals[code] = (refusals[code] ?? 0) + n;
    }
    return {
      name,
      settings,
      firstConnectSeconds,
      restartSeconds: (listeningAt - killedAt) / 1000,
      backP50: percentile(back, 50),
      backP90: percentile(back, 90),
      backMax: back.at(-1) ?? null,
      devicesBack: back.length,
      attempts: result.reconnects.reduce((sum, r) => sum + r.attempts, 0),
      timeouts: result.reconnects.reduce((sum, r) => sum + r.timeouts, 0),
      refusals,
      listenOverflows: overflows,
      delayedByRateLimit: await metricSum(httpUrl, "edge_ingest_mqtt_connections_delayed_total"),
      refusedByRateLimit: await metricSum(
        httpUrl,
        "edge_ingest_mqtt_connects_refused_total",
        'reason="connection_rate"',
      ),
      offered: result.offered,
      acknowledged: acked.length,
      acknowledgedNotStored: acked.filter((id) => !rows.ids.has(id)).length,
      duplicates: rows.duplicates,
    };
  } finally {
    for (const managed of [clients, worker, broker]) if (managed) await stop(managed);
    await db.drop();
    await deleteRedisPrefix(prefix);
    await rm(scratch, { recursive: true, force: true });
  }
}

export async function runReconnectStorm(
  options: StormOptions,
  variants: { name: string; settings: Record<string, string> }[],
): Promise<ReconnectStormResult> {
  const results: StormVariant[] = [];
  for (const variant of variants) results.push(await runVariant(options, variant.name, variant.settings));
  return { ...options, variants: results };
}
