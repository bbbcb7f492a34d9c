/**
 * `npm run faults [-- --only=worker-kill,redis-kill,database-outage,broker-kill,broker-sigterm,redis-without-aof]
 * [--seconds=60] [--rate=1000] [--outage-seconds=120]`: the distributed service on a PostgreSQL and a
 * redis-server (with an append-only file) of its own, two brokers and a worker; ten agents publish QoS 1
 * readings with dedupe ids at `rate` a second each, failing over between the brokers; `fault` seconds
 * into the run one fault is injected. For each fault: acknowledged, stored, acknowledged but not
 * stored, and how long until acknowledgements and storage were back to normal. Writes
 * faults/results/<date>.json. Not part of `npm test`.
 */
import { randomBytes } from "node:crypto";
import { mkdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import pg from "pg";
import { type Managed, ROOT, startNode, stop } from "../bench/lib/processes.ts";
import { ADMIN_TOKEN, agentsFor, serviceEnv, startService } from "../bench/lib/targets.ts";
import type { LoadPlan, SustainResult } from "../bench/load-generator.ts";
import { startOwnPostgres } from "../test/helpers/postgres-server.ts";
import { startOwnRedis } from "../test/helpers/redis-server.ts";

const argument = (name: string) => process.argv.find((a) => a.startsWith(`--${name}=`))?.slice(name.length + 3);
const SECONDS = Number(argument("seconds") ?? 60);
const RATE = Number(argument("rate") ?? 1000);
const OUTAGE_SECONDS = Number(argument("outage-seconds") ?? 120);
const FAULT_AT_SECONDS = 20;
const AGENTS = 10;

type FaultName = "worker-kill" | "redis-kill" | "database-outage" | "broker-kill" | "broker-sigterm";
const FAULTS: FaultName[] = ["worker-kill", "redis-kill", "database-outage", "broker-kill", "broker-sigterm"];
const only = argument("only")?.split(",");
const wanted = (name: string) => !only || only.includes(name);

interface Deployment {
  brokerA: Managed;
  brokerB: Managed;
  worker: Managed;
  env: { a: Record<string, string>; b: Record<string, string>; worker: Record<string, string> };
  postgres: Awaited<ReturnType<typeof startOwnPostgres>>;
  redis: Awaited<ReturnType<typeof startOwnRedis>>;
  urls: string[];
}

export interface FaultResult {
  fault: FaultName;
  offered: number;
  acknowledged: number;
  stored: number;
  acknowledgedNotStored: number;
  /** From the fault until acknowledgements ran at half the offered rate again, after their last dip below it (s). */
  acknowledgingAgainAfterS: number | null;
  /** From the fault until every reading acknowledged so far was stored, give or take a second (s). */
  storedCaughtUpAfterS: number | null;
  faultSeconds: number;
  /** What the first broker counted (when it was still up to ask). */
  counters?: Record<string, number>;
  /** Second by second from the start of the load: acknowledgements, and stored readings (sampled). */
  timeline: { faultAtSecond: number; acknowledged: number[]; stored: number[] };
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

async function deploy(): Promise<Deployment> {
  const postgres = await startOwnPostgres();
  const redis = await startOwnRedis({ appendonly: true });
  const shared = {
    DATABASE_URL: postgres.url,
    REDIS_URL: redis.url,
    REDIS_PREFIX: `faults-${randomBytes(3).toString("hex")}`,
    REDIS_PERSISTENCE: "aof",
    // The load is ten agents of one tenant: the limits are not what is tested here.
    AGENT_MAX_READINGS_PER_SECOND: String(RATE * 10),
    TENANT_MAX_READINGS_PER_SECOND: String(RATE * AGENTS * 10),
    TENANT_READINGS_BURST: String(RATE * AGENTS * 10),
  };
  const env = {
    a: await serviceEnv({ ...shared, ROLES: "api,broker", ADMIN_TOKEN }),
    b: await serviceEnv({ ...shared, ROLES: "broker", MIGRATE_ON_START: "false" }),
    worker: await serviceEnv({ ...shared, ROLES: "worker", MIGRATE_ON_START: "false" }),
  };
  const brokerA = await startService("broker-a", env.a);
  const brokerB = await startService("broker-b", env.b);
  const worker = await startService("worker", env.worker);
  return {
    brokerA,
    brokerB,
    worker,
    env,
    postgres,
    redis,
    urls: [`mqtt://127.0.0.1:${env.a.MQTT_PORT}`, `mqtt://127.0.0.1:${env.b.MQTT_PORT}`],
  };
}

async function teardown(deployment: Deployment): Promise<void> {
  for (const managed of [deployment.worker, deployment.brokerB, deployment.brokerA]) await stop(managed, "SIGKILL");
  await deployment.redis.remove();
  await deployment.postgres.remove();
}

/** Injects the fault; resolves when it is over (what was stopped is running again). */
async function inject(fault: FaultName, d: Deployment): Promise<void> {
  switch (fault) {
    case "worker-kill":
      // Killed and restarted at once, as a supervisor would: its jobs wait for their locks to expire.
      await stop(d.worker, "SIGKILL");
      d.worker = await startService("worker", d.env.worker);
      return;
    case "redis-kill":
      // With a backlog: the worker is held for five seconds first, so jobs wait in Redis when it dies.
      d.worker.child.kill("SIGSTOP");
      await sleep(5000);
      await d.redis.stop();
      await sleep(1000);
      await d.redis.start();
      d.worker.child.kill("SIGCONT");
      return;
    case "database-outage":
      await d.postgres.stop();
      await sleep(OUTAGE_SECONDS * 1000);
      await d.postgres.start();
      return;
    case "broker-kill":
      await stop(d.brokerA, "SIGKILL");
      return;
    case "broker-sigterm":
      await stop(d.brokerA, "SIGTERM");
      return;
  }
}

const COUNTERS = [
  "edge_ingest_mqtt_unacknowledged_total",
  "edge_ingest_mqtt_forced_disconnects_total",
  "edge_ingest_mqtt_connects_refused_total",
  "edge_ingest_throttled_seconds_total",
  "edge_ingest_jobs_stalled_total",
];

async function brokerCounters(httpUrl: string): Promise<Record<string, number> | undefined> {
  const text = await fetch(`${httpUrl}/metrics`).then(
    (response) => response.text(),
    () => undefined,
  );
  if (!text) return undefined;
  const counters: Record<string, number> = {};
  for (const line of text.split("\n")) {
    const name = COUNTERS.find((c) => line.startsWith(`${c} `) || line.startsWith(`${c}{`));
    if (name) counters[line.slice(0, line.lastIndexOf(" "))] = Number(line.slice(line.lastIndexOf(" ") + 1));
  }
  return counters;
}

async function storedIds(url: string, tenantId: string): Promise<Set<string>> {
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  try {
    const { rows } = await client.query("SELECT dedupe_id FROM metrics WHERE tenant_id = $1", [tenantId]);
    return new Set(rows.map((row) => row.dedupe_id as string));
  } finally {
    await client.end();
  }
}

/** Stored readings of the tenant, counted once a second while the run lasts; a failed count (database down) repeats the last. */
function countStored(url: string, tenantId: string) {
  const counts: number[] = [];
  let running = true;
  const done = (async () => {
    while (running) {
      const client = new pg.Client({ connectionString: url, connectionTimeoutMillis: 500 });
      const count = await client
        .connect()
        .then(() => client.query("SELECT count(*)::int AS n FROM metrics WHERE tenant_id = $1", [tenantId]))
        .then((result) => Number(result.rows[0]?.n))
        .catch(() => counts.at(-1) ?? 0)
        .finally(() => client.end().catch(() => undefined));
      counts.push(count);
      await sleep(1000);
    }
  })();
  return {
    counts,
    stop: async () => {
      running = false;
      await done;
    },
  };
}

async function runFault(fault: FaultName, scratch: string): Promise<FaultResult> {
  process.stderr.write(`fault ${fault}…\n`);
  const d = await deploy();
  try {
    const httpUrl = `http://127.0.0.1:${d.env.a.HTTP_PORT}`;
    const { tenantId, publishers } = await agentsFor(httpUrl, ADMIN_TOKEN, AGENTS);
    const ackedFile = path.join(scratch, `${fault}.acked`);
    const seconds = fault === "database-outage" ? FAULT_AT_SECONDS + OUTAGE_SECONDS + 40 : SECONDS;
    const plan: LoadPlan = { mode: "sustain", urls: d.urls, publishers, ratePerSecond: RATE, seconds, ackedFile };
    const stored = countStored(d.postgres.url, tenantId);
    const load = startNode("load", "bench/load-generator.ts", [JSON.stringify(plan)], {
      readyText: "RESULT ",
      timeoutMs: (seconds + 180) * 1000,
    });
    await sleep(FAULT_AT_SECONDS * 1000);
    const faultStarted = Date.now();
    await inject(fault, d);
    const faultSeconds = (Date.now() - faultStarted) / 1000;
    const result = JSON.parse(
      (await load).lines.find((l) => l.startsWith("RESULT "))?.slice(7) ?? "{}",
    ) as SustainResult;
    const counters = await brokerCounters(httpUrl);

    // Everything acknowledged is stored within a minute after the load, or it never will be.
    const acked = readFileSync(ackedFile, "utf8").split("\n").filter(Boolean);
    let ids = new Set<string>();
    for (let i = 0; i < 60; i++) {
      ids = await storedIds(d.postgres.url, tenantId);
      if (acked.every((id) => ids.has(id))) break;
      await sleep(1000);
    }
    await stored.stop();

    const faultSecond = Math.floor((faultStarted - result.startedAt) / 1000);
    const expected = RATE * AGENTS;
    // The last second, from the fault to half a minute after it ended (while the load lasted), with
    // acknowledgements under half the rate.
    const watchedUntil = Math.min(faultSecond + Math.ceil(faultSeconds) + 30, seconds - 1);
    let lastDip = -1;
    result.acksPerSecond.forEach((n, s) => {
      if (s >= faultSecond && s <= watchedUntil && n < expected / 2) lastDip = s;
    });
    // Cumulative acknowledgements against the stored counts sampled each second of the run.
    let cumulative = 0;
    const ackedBy = result.acksPerSecond.map((n) => (cumulative += n));
    const caughtUpAt = stored.counts.findIndex(
      (count, s) => s > faultSecond + faultSeconds && count >= (ackedBy[Math.max(0, s - 1)] ?? cumulative),
    );
    return {
      fault,
      offered: result.offered,
      acknowledged: result.acknowledged,
      stored: ids.size,
      acknowledgedNotStored: acked.filter((id) => !ids.has(id)).length,
      acknowledgingAgainAfterS: lastDip < 0 ? 0 : lastDip + 1 - faultSecond,
      storedCaughtUpAfterS: caughtUpAt < 0 ? null : caughtUpAt - faultSecond,
      faultSeconds,
      counters,
      timeline: { faultAtSecond: faultSecond, acknowledged: result.acksPerSecond, stored: stored.counts },
    };
  } finally {
    await teardown(d);
  }
}

/** A Redis without an append-only file: the service must refuse to start, saying what to set. */
async function refusedWithoutAof(): Promise<{ refused: boolean; message: string }> {
  process.stderr.write("redis without an append-only file…\n");
  const postgres = await startOwnPostgres();
  const redis = await startOwnRedis();
  try {
    const env = await serviceEnv({
      DATABASE_URL: postgres.url,
      REDIS_URL: redis.url,
      REDIS_PERSISTENCE: "aof",
      ROLES: "api,broker,worker",
      ADMIN_TOKEN,
    });
    const started = await startService("refused", env).then(
      (managed) => ({ managed, error: undefined }),
      (error: Error) => ({ managed: undefined, error }),
    );
    if (started.managed) await stop(started.managed);
    const said = started.error?.message ?? "";
    return {
      refused: said.includes("appendonly yes"),
      message: /could not start:(?:\\n|\s)+([^"]*)/.exec(said)?.[1]?.replaceAll("\\n", " ") ?? said.slice(-300),
    };
  } finally {
    await redis.remove();
    await postgres.remove();
  }
}

const table = (headers: string[], rows: (string | number)[][]) => {
  const widths = headers.map((h, i) => Math.max(h.length, ...rows.map((r) => String(r[i]).length)));
  const line = (cells: (string | number)[]) =>
    `| ${cells.map((c, i) => String(c).padEnd(widths[i] ?? 0)).join(" | ")} |`;
  return [line(headers), line(widths.map((w) => "-".repeat(w))), ...rows.map(line)].join("\n");
};
const fmt = (n: number | null) => (n === null ? "—" : n.toLocaleString("en-US", { maximumFractionDigits: 1 }));

async function main() {
  const scratch = path.join(os.tmpdir(), `edge-ingest-faults-${process.pid}`);
  mkdirSync(scratch, { recursive: true });
  const started = Date.now();
  const results: FaultResult[] = [];
  let withoutAof: Awaited<ReturnType<typeof refusedWithoutAof>> | undefined;
  try {
    for (const fault of FAULTS.filter(wanted)) results.push(await runFault(fault, scratch));
    if (wanted("redis-without-aof")) withoutAof = await refusedWithoutAof();
  } finally {
    rmSync(scratch, { recursive: true, force: true });
  }
  console.log(
    `\n${AGENTS} agents × ${RATE} QoS 1 readings/s with dedupe ids, failing over between two brokers; fault at ${FAULT_AT_SECONDS} s\n`,
  );
  console.log(
    table(
      [
        "fault",
        "lasted s",
        "offered",
        "acknowledged",
        "stored",
        "acked, not stored",
        "acks normal after s",
        "stored caught up after s",
      ],
      results.map((r) => [
        r.fault,
        fmt(r.faultSeconds),
        fmt(r.offered),
        fmt(r.acknowledged),
        fmt(r.stored),
        fmt(r.acknowledgedNotStored),
        fmt(r.acknowledgingAgainAfterS),
        fmt(r.storedCaughtUpAfterS),
      ]),
    ),
  );
  if (withoutAof)
    console.log(`\nRedis without an append-only file: refused at start: ${withoutAof.refused} (${withoutAof.message})`);
  const dir = path.join(ROOT, "faults", "results");
  mkdirSync(dir, { recursive: true });
  const date = new Date().toISOString();
  const file = path.join(dir, `${date.slice(0, 10)}${only ? "-partial" : ""}.json`);
  const command = `npm run faults -- ${process.argv.slice(2).join(" ")}`.trim().replace(/ --$/, "");
  const durationSeconds = Math.round((Date.now() - started) / 1000);
  writeFileSync(
    file,
    `${JSON.stringify({ date, command, durationSeconds, agents: AGENTS, rate: RATE, faults: results, withoutAof }, null, 2)}\n`,
  );
  console.log(`\nresults: ${path.relative(ROOT, file)} (${durationSeconds} s)`);
}

await main();
