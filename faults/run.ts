/**
 * `npm run faults [-- --only=worker-kill,redis-kill,database-outage,broker-kill,broker-sigterm,redis-without-aof,
 * sentinel-failover,sentinel-failover-unreplicated,replica-cut] [--seconds=60] [--rate=1000] [--outage-seconds=120]
 * [--replicas=1] [--primary-down-seconds=20] [--replica-cut-seconds=30]`: the distributed service on a
 * PostgreSQL and a redis-server (with an append-only file) of its own, two brokers and a worker (the
 * sentinel faults: a primary, a replica and three sentinels, and two workers); ten agents publish QoS 1
 * readings with dedupe ids at `rate` a second each, failing over between the brokers; `fault` seconds
 * into the run one fault is injected. For each fault: acknowledged, stored, acknowledged but not
 * stored, and how long until acknowledgements and storage were back to normal. Writes
 * faults/results/<date>.json. Not part of `npm test`.
 */
import { randomBytes } from "node:crypto";
import { mkdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { Redis } from "ioredis";
import pg from "pg";
import { type Managed, ROOT, startNode, stop } from "../bench/lib/processes.ts";
import { ADMIN_TOKEN, agentsFor, serviceEnv, startService } from "../bench/lib/targets.ts";
import type { LoadPlan, SustainResult } from "../bench/load-generator.ts";
import { startOwnPostgres } from "../test/helpers/postgres-server.ts";
import { type SentinelGroup, startSentinelGroup } from "../test/helpers/redis-sentinel.ts";
import { type OwnRedis, startOwnRedis } from "../test/helpers/redis-server.ts";

const argument = (name: string) => process.argv.find((a) => a.startsWith(`--${name}=`))?.slice(name.length + 3);
const SECONDS = Number(argument("seconds") ?? 60);
const RATE = Number(argument("rate") ?? 1000);
const OUTAGE_SECONDS = Number(argument("outage-seconds") ?? 120);
/** How long Redis (60 s) and PostgreSQL (90 s) are frozen: connections open, nothing answered. */
const REDIS_FREEZE_SECONDS = Number(argument("redis-freeze-seconds") ?? 60);
const DATABASE_FREEZE_SECONDS = Number(argument("database-freeze-seconds") ?? 90);
const FAULT_AT_SECONDS = 20;
const AGENTS = 10;

type FaultName =
  | "worker-kill"
  | "redis-kill"
  | "database-outage"
  | "broker-kill"
  | "broker-sigterm"
  | "redis-freeze"
  | "database-freeze"
  | "sentinel-failover"
  | "sentinel-failover-unreplicated"
  | "replica-cut";
const FAULTS: FaultName[] = [
  "worker-kill",
  "redis-kill",
  "database-outage",
  "broker-kill",
  "broker-sigterm",
  "redis-freeze",
  "database-freeze",
  "sentinel-failover",
  "sentinel-failover-unreplicated",
  "replica-cut",
];
/** How long the old primary stays dead after a failover (then it comes back, as a replica), and the replica's link is cut. */
const PRIMARY_DOWN_SECONDS = Number(argument("primary-down-seconds") ?? 20);
const REPLICA_CUT_SECONDS = Number(argument("replica-cut-seconds") ?? 30);
/** Replicas beside the primary in the sentinel faults. */
const REPLICAS = Number(argument("replicas") ?? 1);
/**
 * The faults run on Redis behind sentinels, with the REDIS_MIN_REPLICAS each asks for: `unreplicated`
 * is today's default (acknowledged once the primary has it), to show what a failover loses then.
 */
const SENTINEL_FAULTS: Partial<Record<FaultName, number>> = {
  "sentinel-failover": 1,
  "sentinel-failover-unreplicated": 0,
  "replica-cut": 1,
};
/** How long each fault keeps its dependency away, for those that last (the load runs 40 s past it). */
const LASTING: Partial<Record<FaultName, number>> = {
  "database-outage": OUTAGE_SECONDS,
  "redis-freeze": REDIS_FREEZE_SECONDS,
  "database-freeze": DATABASE_FREEZE_SECONDS,
  "sentinel-failover": PRIMARY_DOWN_SECONDS,
  "sentinel-failover-unreplicated": PRIMARY_DOWN_SECONDS,
  "replica-cut": REPLICA_CUT_SECONDS,
};
const only = argument("only")?.split(",");
const wanted = (name: string) => !only || only.includes(name);

interface Deployment {
  brokerA: Managed;
  brokerB: Managed;
  worker: Managed;
  /** The second worker of the sentinel faults. */
  workerB?: Managed;
  env: { a: Record<string, string>; b: Record<string, string>; worker: Record<string, string> };
  postgres: Awaited<ReturnType<typeof startOwnPostgres>>;
  /** The one Redis, or the primary the sentinel group started with. */
  redis: OwnRedis;
  sentinels?: SentinelGroup;
  urls: string[];
}

export interface FaultResult {
  fault: FaultName;
  offered: number;
  acknowledged: number;
  stored: number;
  acknowledgedNotStored: number;
  /** Readings stored more than once (each has a dedupe id). */
  duplicates: number;
  /** From the fault to the first line a process logged about work held or refused (s). */
  firstLogLineAfterS: number | null;
  /** Readings stored per second from the end of the fault until storage caught up (arrivals included). */
  catchUpReadingsPerSecond?: number;
  /** Agents the admin API lists as connected 12 s after the fault ended (a third of the presence lease and then some), of `AGENTS`. */
  agentsListedAfter?: number;
  /** /readyz of the first broker, asked every second: its slowest answer and what it said during the fault, and when it was ready again after. */
  readiness?: { slowestMsDuring: number; notReadyDuring: number; askedDuring: number; readyAgainAfterS: number | null };
  /** From the fault until acknowledgements ran at half the offered rate again, after their last dip below it (s). */
  acknowledgingAgainAfterS: number | null;
  /** From the fault until every reading acknowledged so far was stored, give or take a second (s). */
  storedCaughtUpAfterS: number | null;
  faultSeconds: number;
  /** What the first broker counted (when it was still up to ask). */
  counters?: Record<string, number>;
  /** Sentinel faults: REDIS_MIN_REPLICAS, and when the dead primary was serving again as a replica (s from the fault). */
  sentinel?: { minReplicas: number; failedOverAfterS?: number; oldPrimaryReplicaAfterS?: number | null };
  /** Whether every process of the deployment was still running when the load ended. */
  processesRunning: boolean;
  /** Lines the processes logged from the fault until the load ended. */
  logLinesAfterFault: number;
  /** Second by second from the start of the load: acknowledgements, and stored readings (sampled). */
  timeline: { faultAtSecond: number; acknowledged: number[]; stored: number[] };
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** Polls `check` every 100 ms until it returns a value (at most a minute). */
async function waitFor<T>(check: () => Promise<T | undefined>): Promise<T> {
  for (let i = 0; i < 600; i++) {
    const value = await check().catch(() => undefined);
    if (value !== undefined) return value;
    await sleep(100);
  }
  throw new Error("not within a minute");
}

/** When (epoch ms) the server on `port` serves as a replica with its link up, polled until `deadline`. */
async function servingAsReplica(port: number, deadline: number): Promise<number | undefined> {
  while (Date.now() < deadline) {
    const redis = new Redis(port, "127.0.0.1", { retryStrategy: () => null, maxRetriesPerRequest: 0 });
    redis.on("error", () => undefined);
    const info = await redis.info("replication").catch(() => "");
    redis.disconnect();
    if (/^role:slave/m.test(info) && /^master_link_status:up/m.test(info)) return Date.now();
    await sleep(250);
  }
  return undefined;
}

/** Starts the deployment for `fault`; what was started is stopped again if a later part fails to start. */
async function deploy(fault: FaultName): Promise<Deployment> {
  const started: (() => Promise<unknown>)[] = [];
  const launch = async (name: string, env: Record<string, string>) => {
    const managed = await startService(name, env);
    started.push(() => stop(managed, "SIGKILL"));
    return managed;
  };
  try {
    const postgres = await startOwnPostgres();
    started.push(() => postgres.remove());
    const minReplicas = SENTINEL_FAULTS[fault];
    const sentinels =
      minReplicas === undefined ? undefined : await startSentinelGroup({ replicas: REPLICAS, downAfterMs: 2000 });
    const redis = sentinels?.servers[0] ?? (await startOwnRedis({ appendonly: true }));
    started.push(() => (sentinels ?? redis).remove());
    const redisEnv: Record<string, string> = sentinels
      ? {
          REDIS_URL: "redis://primary-named-by-the-sentinels",
          REDIS_SENTINELS: sentinels.sentinelList,
          REDIS_MIN_REPLICAS: String(minReplicas),
        }
      : { REDIS_URL: redis.url };
    const shared = {
      DATABASE_URL: postgres.url,
      ...redisEnv,
      REDIS_PREFIX: `faults-${randomBytes(3).toString("hex")}`,
      REDIS_PERSISTENCE: "aof",
      // The load is ten agents of one tenant: the limits are not what is tested here.
      AGENT_MAX_READINGS_PER_SECOND: String(RATE * 10),
      TENANT_MAX_READINGS_PER_SECOND: String(RATE * AGENTS * 10),
      TENANT_READINGS_BURST: String(RATE * AGENTS * 10),
    };
    const workerEnv = () => serviceEnv({ ...shared, ROLES: "worker", MIGRATE_ON_START: "false" });
    const env = {
      a: await serviceEnv({ ...shared, ROLES: "api,broker", ADMIN_TOKEN }),
      b: await serviceEnv({ ...shared, ROLES: "broker", MIGRATE_ON_START: "false" }),
      worker: await workerEnv(),
    };
    return {
      brokerA: await launch("broker-a", env.a),
      brokerB: await launch("broker-b", env.b),
      worker: await launch("worker", env.worker),
      workerB: sentinels ? await launch("worker-b", await workerEnv()) : undefined,
      env,
      postgres,
      redis,
      sentinels,
      urls: [`mqtt://127.0.0.1:${env.a.MQTT_PORT}`, `mqtt://127.0.0.1:${env.b.MQTT_PORT}`],
    };
  } catch (error) {
    for (const undo of started.reverse()) await undo().catch(() => undefined);
    throw error;
  }
}

/** The deployment of the fault running now: torn down if the harness itself is stopped or crashes. */
let deployed: Deployment | undefined;
for (const event of ["SIGINT", "SIGTERM", "uncaughtException"] as const) {
  process.once(event, (error: unknown) => {
    if (event === "uncaughtException") console.error(error);
    const leftover = deployed;
    deployed = undefined;
    void (leftover ? teardown(leftover) : Promise.resolve()).finally(() => process.exit(1));
  });
}

const processesOf = (d: Deployment): Managed[] => [d.brokerA, d.brokerB, d.worker, ...(d.workerB ? [d.workerB] : [])];

async function teardown(deployment: Deployment): Promise<void> {
  for (const managed of processesOf(deployment)) await stop(managed, "SIGKILL");
  await (deployment.sentinels ?? deployment.redis).remove();
  await deployment.postgres.remove();
}

/**
 * Injects the fault; resolves when it is over (what was stopped is running again), with when the
 * sentinels named a new primary if they did.
 */
async function inject(fault: FaultName, d: Deployment): Promise<number | undefined> {
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
    case "redis-freeze":
      d.redis.pause();
      await sleep(REDIS_FREEZE_SECONDS * 1000);
      d.redis.resume();
      return;
    case "database-freeze":
      await d.postgres.pause();
      await sleep(DATABASE_FREEZE_SECONDS * 1000);
      await d.postgres.resume();
      return;
    case "sentinel-failover":
    case "sentinel-failover-unreplicated": {
      // The primary dies under load; the sentinels promote the replica; the old primary comes back later.
      const group = d.sentinels as SentinelGroup;
      const before = await group.primaryPort();
      const primary = group.servers.find((server) => server.port === before) as OwnRedis;
      await primary.stop();
      const failedOver = await waitFor(async () => ((await group.primaryPort()) !== before ? Date.now() : undefined));
      await sleep(PRIMARY_DOWN_SECONDS * 1000 - (Date.now() - failedOver));
      await primary.start();
      return failedOver;
    }
    case "replica-cut": {
      // The primary alone: its replica stops answering (SIGSTOP), so nothing written can be confirmed.
      const group = d.sentinels as SentinelGroup;
      const primary = await group.primaryPort();
      const replica = group.servers.find((server) => server.port !== primary) as OwnRedis;
      replica.pause();
      await sleep(REPLICA_CUT_SECONDS * 1000);
      replica.resume();
      return;
    }
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

async function storedIds(url: string, tenantId: string): Promise<{ ids: Set<string>; rows: number }> {
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  try {
    const { rows } = await client.query("SELECT dedupe_id FROM metrics WHERE tenant_id = $1", [tenantId]);
    return { ids: new Set(rows.map((row) => row.dedupe_id as string)), rows: rows.length };
  } finally {
    await client.end();
  }
}

/** What a process logs when it holds or refuses work because a dependency does not answer. */
const HELD_LINE = /held: waiting on|not acknowledged|database unavailable|cannot /;

/** When, after `since`, a process first logged such a line (epoch ms), if it did. */
function firstHeldLine(processes: Managed[], since: number): number | undefined {
  const times = processes.flatMap((managed) =>
    managed.lines.flatMap((line) => {
      try {
        const { time, msg } = JSON.parse(line) as { time: number; msg: string };
        return time >= since && HELD_LINE.test(msg) ? [time] : [];
      } catch {
        return [];
      }
    }),
  );
  return times.length > 0 ? Math.min(...times) : undefined;
}

/** The tenant's agents the admin API lists as connected, on any broker. */
async function listedAgents(httpUrl: string, tenantId: string): Promise<number> {
  const response = await fetch(`${httpUrl}/api/v1/admin/tenants/${tenantId}/clients`, {
    headers: { authorization: `Bearer ${ADMIN_TOKEN}` },
  });
  const clients = (await response.json()) as { agent_id: string | null }[];
  return new Set(clients.flatMap((client) => (client.agent_id ? [client.agent_id] : []))).size;
}

/** Asks /readyz once a second until stopped: when, how long it took, what it said. */
function probeReadiness(httpUrl: string) {
  const answers: { at: number; ms: number; status: number }[] = [];
  let running = true;
  const done = (async () => {
    while (running) {
      const at = Date.now();
      const status = await fetch(`${httpUrl}/readyz`, { signal: AbortSignal.timeout(10_000) }).then(
        (response) => response.status,
        () => 0,
      );
      answers.push({ at, ms: Date.now() - at, status });
      await sleep(Math.max(0, at + 1000 - Date.now()));
    }
  })();
  return {
    answers,
    stop: async () => {
      running = false;
      await done;
    },
  };
}

/**
 * Stored readings of the tenant, counted about once a second while the run lasts, each count with
 * when it was taken; a failed count (database down or frozen) repeats the last.
 */
function countStored(url: string, tenantId: string) {
  const samples: { at: number; count: number }[] = [];
  let running = true;
  const done = (async () => {
    while (running) {
      const at = Date.now();
      const client = new pg.Client({ connectionString: url, connectionTimeoutMillis: 500, query_timeout: 500 });
      // A server stopped mid-query ends the connection with an 'error' event: a count that failed.
      client.on("error", () => undefined);
      const count = await client
        .connect()
        .then(() => client.query("SELECT count(*)::int AS n FROM metrics WHERE tenant_id = $1", [tenantId]))
        .then((result) => Number(result.rows[0]?.n))
        .catch(() => samples.at(-1)?.count ?? 0)
        .finally(() => client.end().catch(() => undefined));
      samples.push({ at, count });
      await sleep(Math.max(0, at + 1000 - Date.now()));
    }
  })();
  return {
    /** The count at each second from `start`: the last taken by then. */
    perSecond(start: number, seconds: number): number[] {
      return Array.from({ length: seconds }, (_, s) =>
        samples.reduce((last, sample) => (sample.at <= start + (s + 1) * 1000 ? sample.count : last), 0),
      );
    },
    stop: async () => {
      running = false;
      await done;
    },
  };
}

async function runFault(fault: FaultName, scratch: string): Promise<FaultResult> {
  process.stderr.write(`fault ${fault}…\n`);
  const d = await deploy(fault);
  deployed = d;
  try {
    const httpUrl = `http://127.0.0.1:${d.env.a.HTTP_PORT}`;
    const { tenantId, publishers } = await agentsFor(httpUrl, ADMIN_TOKEN, AGENTS);
    const ackedFile = path.join(scratch, `${fault}.acked`);
    const lasting = LASTING[fault];
    const seconds = lasting ? FAULT_AT_SECONDS + lasting + 40 : SECONDS;
    const plan: LoadPlan = { mode: "sustain", urls: d.urls, publishers, ratePerSecond: RATE, seconds, ackedFile };
    const stored = countStored(d.postgres.url, tenantId);
    const load = startNode("load", "bench/load-generator.ts", [JSON.stringify(plan)], {
      readyText: "RESULT ",
      timeoutMs: (seconds + 180) * 1000,
    });
    await sleep(FAULT_AT_SECONDS * 1000);
    const readiness = probeReadiness(httpUrl);
    const primaryBefore = await d.sentinels?.primaryPort();
    const faultStarted = Date.now();
    const failedOverAt = await inject(fault, d);
    const faultEnded = Date.now();
    const faultSeconds = (faultEnded - faultStarted) / 1000;
    const oldPrimaryReplicaAt =
      failedOverAt && primaryBefore ? await servingAsReplica(primaryBefore, Date.now() + 60_000) : undefined;
    const agentsListedAfter = lasting ? await sleep(12_000).then(() => listedAgents(httpUrl, tenantId)) : undefined;
    const result = JSON.parse(
      (await load).lines.find((l) => l.startsWith("RESULT "))?.slice(7) ?? "{}",
    ) as SustainResult;
    const counters = await brokerCounters(httpUrl);
    await readiness.stop();
    const processes = processesOf(d);
    const heldLine = firstHeldLine(processes, faultStarted);
    // A broker the fault itself stopped is not expected to run.
    const processesRunning = processes
      .filter((managed) => !(managed === d.brokerA && fault.startsWith("broker-")))
      .every((managed) => managed.child.exitCode === null && managed.child.signalCode === null);
    const logLinesAfterFault = processes
      .flatMap((managed) => managed.lines)
      .filter((line) => Number(/"time":(\d+)/.exec(line)?.[1]) >= faultStarted).length;
    const during = readiness.answers.filter((a) => a.at >= faultStarted && a.at < faultEnded);
    const readyAgain = readiness.answers.find((a) => a.at >= faultEnded && a.status === 200);

    // Everything acknowledged is stored within a minute after the load, or it never will be.
    const acked = readFileSync(ackedFile, "utf8").split("\n").filter(Boolean);
    let ids = new Set<string>();
    let rows = 0;
    for (let i = 0; i < 60; i++) {
      ({ ids, rows } = await storedIds(d.postgres.url, tenantId));
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
    const storedPerSecond = stored.perSecond(result.startedAt, result.acksPerSecond.length + 60);
    const caughtUpAt = storedPerSecond.findIndex(
      (count, s) => s > faultSecond + faultSeconds && count >= (ackedBy[Math.max(0, s - 1)] ?? cumulative),
    );
    const endedSecond = faultSecond + Math.ceil(faultSeconds);
    const catchUp =
      lasting && caughtUpAt > endedSecond
        ? ((storedPerSecond[caughtUpAt] ?? 0) - (storedPerSecond[endedSecond] ?? 0)) / (caughtUpAt - endedSecond)
        : undefined;
    return {
      fault,
      offered: result.offered,
      acknowledged: result.acknowledged,
      stored: ids.size,
      acknowledgedNotStored: acked.filter((id) => !ids.has(id)).length,
      duplicates: rows - ids.size,
      ...(agentsListedAfter !== undefined && { agentsListedAfter }),
      ...(catchUp !== undefined && { catchUpReadingsPerSecond: Math.round(catchUp) }),
      firstLogLineAfterS: heldLine === undefined ? null : (heldLine - faultStarted) / 1000,
      ...(lasting && {
        readiness: {
          slowestMsDuring: Math.max(0, ...during.map((a) => a.ms)),
          notReadyDuring: during.filter((a) => a.status === 503).length,
          askedDuring: during.length,
          readyAgainAfterS: readyAgain ? (readyAgain.at - faultEnded) / 1000 : null,
        },
      }),
      acknowledgingAgainAfterS: lastDip < 0 ? 0 : lastDip + 1 - faultSecond,
      storedCaughtUpAfterS: caughtUpAt < 0 ? null : caughtUpAt - faultSecond,
      faultSeconds,
      ...(d.sentinels && {
        sentinel: {
          minReplicas: SENTINEL_FAULTS[fault] ?? 0,
          ...(failedOverAt && {
            failedOverAfterS: (failedOverAt - faultStarted) / 1000,
            oldPrimaryReplicaAfterS: oldPrimaryReplicaAt ? (oldPrimaryReplicaAt - faultStarted) / 1000 : null,
          }),
        },
      }),
      processesRunning,
      logLinesAfterFault,
      counters,
      timeline: { faultAtSecond: faultSecond, acknowledged: result.acksPerSecond, stored: storedPerSecond },
    };
  } finally {
    deployed = undefined;
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
    `\n${AGENTS} agents × ${RATE} QoS 1 readings/s with dedupe ids, failing over between two brokers; fault at ${FAULT_AT_SECONDS} s${results.some((r) => r.sentinel) ? `; sentinel faults: a primary and ${REPLICAS} replica(s)` : ""}\n`,
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
        "duplicates",
        "first log line after s",
        "/readyz during: not ready / asked, slowest ms",
        "ready again after s",
        "agents listed after",
        "catch-up stored/s",
        "REDIS_MIN_REPLICAS",
        "failed over after s",
        "old primary a replica after s",
        "processes running",
        "log lines after fault",
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
        fmt(r.duplicates),
        fmt(r.firstLogLineAfterS),
        r.readiness
          ? `${r.readiness.notReadyDuring} / ${r.readiness.askedDuring}, ${r.readiness.slowestMsDuring}`
          : "—",
        r.readiness ? fmt(r.readiness.readyAgainAfterS) : "—",
        r.agentsListedAfter === undefined ? "—" : `${r.agentsListedAfter} of ${AGENTS}`,
        fmt(r.catchUpReadingsPerSecond ?? null),
        r.sentinel ? r.sentinel.minReplicas : "—",
        fmt(r.sentinel?.failedOverAfterS ?? null),
        fmt(r.sentinel?.oldPrimaryReplicaAfterS ?? null),
        r.processesRunning ? "yes" : "NO",
        fmt(r.logLinesAfterFault),
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
    `${JSON.stringify({ date, command, durationSeconds, agents: AGENTS, rate: RATE, replicas: REPLICAS, faults: results, withoutAof }, null, 2)}\n`,
  );
  console.log(`\nresults: ${path.relative(ROOT, file)} (${durationSeconds} s)`);
}

await main();
