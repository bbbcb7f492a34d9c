/**
 * `npm run bench [-- --quick] [--only=scenario,...,edge-ingest-no-database,edge-ingest-unreplicated,edge-ingest-replicated,edge-ingest-2-brokers,edge-ingest-2-workers,edge-ingest-2-brokers-2-workers,insert,insert-cost,idle,noisy-neighbour,backlog-drain,reconnect-storm,formats,tls-handshake,footprint,soak,storage,storage-history] [--qos=0|1] [--flooders=1,8,32] [--flooder-tenants=N] [--drain-jobs=N] [--drain-concurrency=4,32] [--storm-agents=5000] [--storm-tenants=10] [--storm-rate=500] [--storm-connack-timeout-ms=10000] [--storm-jitter-ms=500] [--storm-variants=before,after]
 * [--formats-requests=2000] [--formats-times=10] [--formats-concurrency=8] [--formats-rounds=3]
 * [--handshake-connections=2000] [--handshake-concurrency=20] [--handshake-rounds=3]
 * [--rounds=N] [--profile] [--service-node-args="--flag …"] [--service-env="NAME=value …"]`: edge-ingest against the architecture it replaces (Mosquitto + a bridge enqueuing one job per message)
 * and against bare Aedes, at QoS 0 and 1, then the worker-insert micro-benchmark, PostgreSQL's cost of that insert
 * (insert-cost), the idle-connections, noisy-neighbour, footprint and soak scenarios (soak and storage take ten minutes or more each; never in --quick). Prints tables and
 * writes bench/results/<date>[-quick][-n].json (-n: the day's n-th whole run). Everything runs on free ports, with its own database,
 * Redis prefix and data directory, removed afterwards.
 */

import { existsSync, mkdirSync, rmSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { loadConfig } from "../src/config.ts";
import { runBacklogDrain } from "./backlog-drain.ts";
import { runFootprint } from "./footprint.ts";
import { runFormats } from "./formats.ts";
import { assertFilesForIdle, runIdle, SETTLE_MS } from "./idle.ts";
import { runInsert } from "./insert.ts";
import { runInsertCost } from "./insert-cost.ts";
import { median, type ProcessStats, ROOT, startNode, statsOf } from "./lib/processes.ts";
import type { RowStats } from "./lib/rows.ts";
import { redisCommands, serviceCpu } from "./lib/service-cpu.ts";
import { PG_ADMIN_URL, REDIS_URL, startTarget, type Target, type TargetName } from "./lib/targets.ts";
import type { LoadPlan, LoadResult } from "./load-generator.ts";
import { runNoisyNeighbour } from "./noisy-neighbour.ts";
import { runReconnectStorm } from "./reconnect-storm.ts";
import { runSoak } from "./soak.ts";
import { runStorage, runStorageHistory } from "./storage.ts";
import { runTlsHandshake } from "./tls-handshake.ts";

const quick = process.argv.includes("--quick");
const only = process.argv
  .find((a) => a.startsWith("--only="))
  ?.slice(7)
  .split(",");
const qosLevels = ([0, 1] as const).filter((q) => {
  const chosen = process.argv.find((a) => a.startsWith("--qos="))?.slice(6);
  return chosen === undefined || Number(chosen) === q;
});
if (process.argv.includes("--profile")) {
  // Read by bench/lib/targets.ts: edge-ingest processes write V8 CPU profiles there.
  process.env.BENCH_PROFILE_DIR = path.join(ROOT, "bench", "profiles");
}
const argValue = (name: string) => process.argv.find((a) => a.startsWith(`--${name}=`))?.slice(name.length + 3);
const serviceNodeArgs = argValue("service-node-args");
// Read by bench/lib/targets.ts: Node options for edge-ingest's processes only (not the load generator
// or the baselines), to compare V8 settings.
if (serviceNodeArgs) process.env.BENCH_SERVICE_NODE_ARGS = serviceNodeArgs;
// Read by bench/lib/targets.ts: settings for edge-ingest's processes (`--service-env="NAME=value …"`),
// over the benchmark's own, e.g. MQTT_BATCH_MAX_MESSAGES=1 for a job per reading.
const serviceEnvArg = argValue("service-env");
if (serviceEnvArg) process.env.BENCH_SERVICE_ENV = serviceEnvArg;
/** `--name=N[,N…]`: whole numbers of at least `least`, or the run stops here, naming the option. */
function wholeNumbers(name: string, fallback: number[], least = 1): number[] {
  const raw = argValue(name);
  if (raw === undefined) return fallback;
  const values = raw.split(",").map(Number);
  if (values.some((value) => !Number.isInteger(value) || value < least)) {
    console.error(`bench: --${name} takes whole numbers of at least ${least}, separated by commas (got "${raw}")`);
    process.exit(2);
  }
  return values;
}
const wholeNumber = (name: string, fallback: number) => wholeNumbers(name, [fallback])[0] as number;
/**
 * The broker's settings in each reconnect-storm variant: `before` is how the listeners behaved
 * before the storm work (Node's default backlog, a connection past the rate waits however long its
 * turn is); `after` is the defaults.
 */
const STORM_VARIANTS: Record<string, Record<string, string>> = {
  before: { MQTT_LISTEN_BACKLOG: "511", MQTT_CONNECTION_MAX_WAIT_MS: "60000" },
  after: {},
};
/**
 * `--protocol=5`: each edge-ingest target's flat-out runs once more with MQTT 5.0 clients, right
 * after its 3.1.1 run (the baselines speak 3.1.1 only), and the ratio of the two.
 */
const protocolArg = argValue("protocol");
if (protocolArg !== undefined && protocolArg !== "5") {
  console.error(`bench: --protocol takes 5 (MQTT 5.0 runs beside the 3.1.1 ones; got "${protocolArg}")`);
  process.exit(2);
}
const protocols: (4 | 5)[] = protocolArg === "5" ? [4, 5] : [4];
const sizes = quick
  ? {
      publishers: 4,
      messages: 2500,
      inflight: 50,
      idle: [500, 2000],
      insertRows: 10_000,
      insertCostReadings: 6_000,
      noisySeconds: 5,
    }
  : {
      publishers: 10,
      messages: wholeNumber("messages", 20_000),
      inflight: 100,
      idle: wholeNumbers("idle", [2000, 10_000, 19_000]),
      insertRows: 100_000,
      insertCostReadings: 60_000,
      noisySeconds: 20,
    };

/**
 * `--rounds=N`: the flat-out scenarios N times over, every target once a round, so each ratio pairs
 * runs minutes apart at most; the machine's speed drifts by more between the first and the last
 * target of one round than most changes measured against it.
 */
const rounds = wholeNumber("rounds", 1);

/**
 * A paced run's PUBACK percentiles leave out the messages of its first two seconds, reported apart:
 * there both ends run code not yet optimised (V8) and connections not yet used; the p99 of a
 * 200,000-message run is its slowest 2,000 messages, which that first second alone fills.
 */
const PACED_WARMUP_MS = 2000;

/**
 * Readings a statement in the insert-cost scenario: from a quiet broker's small jobs to a flat-out
 * run's (about 400 a job; MQTT_BATCH_MAX_MESSAGES caps them at 500).
 */
const INSERT_COST_STATEMENT_SIZES = [30, 120, 480];

const TARGETS: TargetName[] = ["aedes-bare", "seed-architecture", "edge-ingest-embedded", "edge-ingest-distributed"];
/**
 * Only when named: the distributed broker beside a worker that stores nothing (its acknowledgements
 * without PostgreSQL's share of the two cores), a bound on what the storage leaves to the ratio.
 */
const NAMED_ONLY_TARGETS: TargetName[] = [
  "edge-ingest-no-database",
  // The same service on a Redis primary and replica of its own, acknowledging once the primary has
  // a job, and once a replica has it too (REDIS_MIN_REPLICAS=1): the cost of that wait.
  "edge-ingest-unreplicated",
  "edge-ingest-replicated",
  // More processes of a role on the same two cores, to check the sizing model (docs/scaling.md).
  "edge-ingest-2-brokers",
  "edge-ingest-2-workers",
  "edge-ingest-2-brokers-2-workers",
];
const wanted = (name: string) => !only || only.includes(name);

interface ScenarioResult {
  scenario: TargetName;
  qos: 0 | 1;
  /** The MQTT version the load generator spoke: 4 is 3.1.1, 5 is 5.0. */
  protocol: 4 | 5;
  /** Flat-out runs: which of the `--rounds` it belongs to, from 1. */
  round?: number;
  /** Offered rate when the run was paced (half the rate measured unpaced); absent: flat out. */
  pacedAt?: number;
  offered: number;
  acknowledged: number;
  stored: number | null;
  acknowledgedPerSecond: number;
  storedPerSecond: number | null;
  /** Acknowledged readings that are stored, per second until the last of them was acknowledged and stored. */
  acknowledgedAndStoredPerSecond: number | null;
  acknowledgedNotStored: number | null;
  /** Paced runs: of the messages sent after the first PACED_WARMUP_MS. */
  pubackP50Ms: number | null;
  pubackP99Ms: number | null;
  /** Paced runs: how many messages were sent in the first PACED_WARMUP_MS, and their PUBACK p99. */
  warmupMessages?: number;
  warmupPubackP99Ms?: number | null;
  publishToRowP50Ms: number | null;
  publishToRowP99Ms: number | null;
  processes: Record<string, ProcessStats>;
  /**
   * CPU microseconds a message offered, from the first message sent until the last was stored, of
   * every process the scenario ran on (the load generator's own, PostgreSQL's and Redis's included).
   */
  cpuMicrosPerMessage: Record<string, number>;
  /** Commands the target's Redis executed a message offered (every process's, over the whole scenario). */
  redisCommandsPerMessage?: number;
  /** edge-ingest's own counters at the end of the run: drops and refusals it reported. */
  counters?: Record<string, number>;
}

const COUNTERS = [
  "edge_ingest_mqtt_qos0_dropped_total",
  "edge_ingest_mqtt_unacknowledged_total",
  "edge_ingest_metrics_accepted_total",
  "edge_ingest_jobs_enqueued_total",
  "nodejs_eventloop_lag_max_seconds",
  "nodejs_eventloop_lag_p99_seconds",
  "nodejs_gc_duration_seconds_sum",
];

async function readCounters(url: string): Promise<Record<string, number>> {
  const text = await (await fetch(url)).text();
  const counters: Record<string, number> = {};
  for (const line of text.split("\n")) {
    const name = COUNTERS.find((c) => line.startsWith(`${c} `) || line.startsWith(`${c}{`));
    if (name) counters[name] = (counters[name] ?? 0) + Number(line.slice(line.lastIndexOf(" ") + 1));
  }
  return counters;
}

/** CPU seconds so far of each process of the target, and of PostgreSQL and Redis when it runs on them. */
async function cpuSoFar(target: Target): Promise<Record<string, number>> {
  const cpu: Record<string, number> = {};
  for (const managed of target.processes) cpu[managed.name] = statsOf(managed.child.pid as number).cpuSeconds;
  return target.usesSharedServices
    ? { ...cpu, ...(await serviceCpu(PG_ADMIN_URL, target.redisUrl ?? REDIS_URL)) }
    : cpu;
}

async function runScenario(
  name: TargetName,
  qos: 0 | 1,
  scratch: string,
  pacedAt?: number,
  protocol: 4 | 5 = 4,
): Promise<ScenarioResult> {
  const target = await startTarget(name, sizes.publishers);
  try {
    const ackedFile = path.join(scratch, `${name}-qos${qos}-v${protocol}${pacedAt ? "-paced" : ""}.acked`);
    const plan: LoadPlan = {
      mode: "publish",
      protocolVersion: protocol,
      url: target.mqttUrl,
      publishers: target.publishers,
      messages: sizes.messages,
      inflight: sizes.inflight,
      qos,
      ackedFile,
      ratePerSecond: pacedAt,
      ...(pacedAt && { warmupMs: PACED_WARMUP_MS }),
    };
    const cpuAtStart = await cpuSoFar(target);
    const redisUrl = target.usesSharedServices ? (target.redisUrl ?? REDIS_URL) : undefined;
    const commandsAtStart = redisUrl ? await redisCommands(redisUrl) : 0;
    let redisCommandsPerMessage: number | undefined;
    const loadgen = await startNode("load-generator", "bench/load-generator.ts", [JSON.stringify(plan)], {
      readyText: "RESULT ",
      timeoutMs: 15 * 60_000,
    });
    const load = JSON.parse(loadgen.lines.find((l) => l.startsWith("RESULT "))?.slice(7) ?? "{}") as LoadResult;
    const processes: Record<string, ProcessStats> = {
      "load-generator": { cpuSeconds: load.cpuSeconds, peakRssMiB: load.peakRssMiB },
    };
    const cpuMicrosPerMessage: Record<string, number> = {
      "load-generator": (load.publishingCpuSeconds * 1e6) / load.offered,
    };
    let counters: Record<string, number> | undefined;
    const snapshot = async () => {
      for (const managed of target.processes) processes[managed.name] = statsOf(managed.child.pid as number);
      for (const [name, seconds] of Object.entries(await cpuSoFar(target))) {
        cpuMicrosPerMessage[name] = ((seconds - (cpuAtStart[name] ?? 0)) * 1e6) / load.offered;
      }
      if (target.metricsUrl) counters = await readCounters(target.metricsUrl);
      if (redisUrl) redisCommandsPerMessage = ((await redisCommands(redisUrl)) - commandsAtStart) / load.offered;
    };
    let rows: RowStats | undefined;
    if (target.measure) {
      // At QoS 0 nothing is acknowledged: every reading offered should be stored.
      rows = await target.measure(
        qos === 1 ? load.acknowledged : load.offered,
        qos === 1 ? ackedFile : undefined,
        snapshot,
      );
    } else {
      await snapshot();
    }
    const seconds = (ms: number) => Math.max(ms, 1) / 1000;
    const lastAckAt = load.startedAt + load.durationMs;
    const stored = rows?.rows ?? null;
    const storedAcknowledged = rows ? load.acknowledged - rows.acknowledgedNotStored : null;
    const lastStoredAt = rows?.lastStoredAt ?? null;
    return {
      scenario: name,
      qos,
      protocol,
      ...(pacedAt && { pacedAt }),
      offered: load.offered,
      acknowledged: load.acknowledged,
      stored,
      acknowledgedPerSecond: load.acknowledged / seconds(load.durationMs),
      storedPerSecond: stored !== null && lastStoredAt ? stored / seconds(lastStoredAt - load.startedAt) : null,
      acknowledgedAndStoredPerSecond:
        qos === 1 && storedAcknowledged !== null && lastStoredAt
          ? storedAcknowledged / seconds(Math.max(lastAckAt, lastStoredAt) - load.startedAt)
          : null,
      acknowledgedNotStored: qos === 1 && rows ? rows.acknowledgedNotStored : null,
      pubackP50Ms: load.pubackP50Ms,
      pubackP99Ms: load.pubackP99Ms,
      ...(pacedAt && { warmupMessages: load.warmupMessages, warmupPubackP99Ms: load.warmupPubackP99Ms }),
      publishToRowP50Ms: rows?.publishToRowP50Ms ?? null,
      publishToRowP99Ms: rows?.publishToRowP99Ms ?? null,
      processes,
      cpuMicrosPerMessage,
      ...(redisCommandsPerMessage !== undefined && { redisCommandsPerMessage }),
      counters,
    };
  } finally {
    await target.close();
  }
}

const fmt = (value: number | null | undefined, digits = 0) =>
  value === null || value === undefined ? "—" : value.toLocaleString("en-US", { maximumFractionDigits: digits });

function table(headers: string[], rows: (string | number)[][]): string {
  const widths = headers.map((h, i) => Math.max(h.length, ...rows.map((r) => String(r[i]).length)));
  const line = (cells: (string | number)[]) =>
    `| ${cells.map((c, i) => String(c).padEnd(widths[i] ?? 0)).join(" | ")} |`;
  return [line(headers), line(widths.map((w) => "-".repeat(w))), ...rows.map(line)].join("\n");
}

async function main() {
  // Before the scenarios that come first, not half an hour into the run.
  if (wanted("idle")) assertFilesForIdle(sizes.idle);
  const scratch = path.join(os.tmpdir(), `edge-ingest-bench-${process.pid}`);
  mkdirSync(scratch, { recursive: true });
  const started = Date.now();
  const scenarios: ScenarioResult[] = [];
  let soak: Awaited<ReturnType<typeof runSoak>> | undefined;
  try {
    for (let round = 1; round <= rounds; round++) {
      for (const qos of qosLevels) {
        for (const name of [...TARGETS.filter(wanted), ...NAMED_ONLY_TARGETS.filter((n) => only?.includes(n))]) {
          for (const protocol of name.startsWith("edge-ingest") ? protocols : [4 as const]) {
            const version = protocol === 5 ? " MQTT 5" : "";
            process.stderr.write(`scenario ${name}${version} QoS ${qos}${rounds > 1 ? ` round ${round}` : ""}…\n`);
            scenarios.push({ ...(await runScenario(name, qos, scratch, undefined, protocol)), round });
          }
        }
      }
    }
    // PUBACK latency at half the maximum rate (the median of the rounds): edge-ingest at QoS 1, paced.
    const latencyMeasured = (s: ScenarioResult) => TARGETS.includes(s.scenario) && s.scenario.startsWith("edge-ingest");
    const flatOutQos1 = scenarios.filter((s) => s.qos === 1 && s.protocol === 4 && latencyMeasured(s));
    for (const name of new Set(flatOutQos1.map((s) => s.scenario))) {
      const pacedAt = Math.round(
        median(flatOutQos1.filter((s) => s.scenario === name).map((s) => s.acknowledgedPerSecond)) / 2,
      );
      process.stderr.write(`scenario ${name} QoS 1 paced at ${pacedAt} msg/s…\n`);
      scenarios.push(await runScenario(name, 1, scratch, pacedAt));
    }
    // The soak runs at 80 % of the distributed QoS 1 maximum of this run (measured first if need be).
    if (wanted("soak") && !quick) {
      let flatOuts = scenarios.filter(
        (s) => s.scenario === "edge-ingest-distributed" && s.qos === 1 && s.protocol === 4 && !s.pacedAt,
      );
      if (!argValue("soak-rate") && flatOuts.length === 0) {
        process.stderr.write("soak: measuring the distributed QoS 1 maximum first…\n");
        flatOuts = [await runScenario("edge-ingest-distributed", 1, scratch)];
        scenarios.push(...flatOuts);
      }
      // The median of none is 0: only with --soak-rate, which replaces it.
      const maximum = median(flatOuts.map((s) => s.acknowledgedAndStoredPerSecond ?? s.acknowledgedPerSecond));
      const rate = wholeNumber("soak-rate", Math.round(0.8 * maximum));
      const seconds = wholeNumber("soak-seconds", 600);
      process.stderr.write(`soak: ${rate} readings/s for ${seconds} s…\n`);
      soak = await runSoak(rate, seconds, scratch);
    }
  } finally {
    rmSync(scratch, { recursive: true, force: true });
  }

  const rate = (s: ScenarioResult) => s.acknowledgedAndStoredPerSecond ?? s.storedPerSecond ?? s.acknowledgedPerSecond;
  // Each run is compared with the baselines of its own round.
  const find = (name: TargetName, of: ScenarioResult, protocol: 4 | 5 = 4) =>
    scenarios.find(
      (s) => s.scenario === name && s.qos === of.qos && s.round === of.round && s.protocol === protocol && !s.pacedAt,
    );
  const ratios = scenarios
    .filter((s) => s.scenario.startsWith("edge-ingest") && !s.pacedAt)
    .map((s) => {
      const seed = find("seed-architecture", s);
      const bare = find("aedes-bare", s);
      const mqtt311 = s.protocol === 5 ? find(s.scenario, s) : undefined;
      const unreplicated = s.scenario === "edge-ingest-replicated" ? find("edge-ingest-unreplicated", s) : undefined;
      return {
        scenario: s.scenario,
        qos: s.qos,
        protocol: s.protocol,
        round: s.round,
        vsMqtt311: mqtt311 ? rate(s) / rate(mqtt311) : null,
        vsUnreplicated: unreplicated ? rate(s) / rate(unreplicated) : null,
        vsSeedArchitecture: seed ? rate(s) / rate(seed) : null,
        vsAedesBare: bare ? rate(s) / bare.acknowledgedPerSecond : null,
      };
    });
  const medianOf = (values: (number | null)[]) => {
    const known = values.filter((value): value is number => value !== null);
    return known.length > 0 ? median(known) : null;
  };
  // One row a target and QoS: the median of its rounds.
  const medianRatios =
    rounds > 1
      ? ratios
          .filter((r) => r.round === 1)
          .map(({ scenario, qos, protocol }) => {
            const of = ratios.filter((r) => r.scenario === scenario && r.qos === qos && r.protocol === protocol);
            return {
              scenario,
              qos,
              protocol,
              vsMqtt311: medianOf(of.map((r) => r.vsMqtt311)),
              vsUnreplicated: medianOf(of.map((r) => r.vsUnreplicated)),
              vsSeedArchitecture: medianOf(of.map((r) => r.vsSeedArchitecture)),
              vsAedesBare: medianOf(of.map((r) => r.vsAedesBare)),
            };
          })
      : undefined;

  const insert = wanted("insert") ? await runInsert(sizes.insertRows) : undefined;
  const insertCost = wanted("insert-cost")
    ? await runInsertCost(sizes.insertCostReadings, INSERT_COST_STATEMENT_SIZES)
    : undefined;
  const idle = wanted("idle") ? await runIdle(sizes.idle, quick ? 15_000 : SETTLE_MS) : undefined;
  const footprint = wanted("footprint") ? await runFootprint(quick ? 5000 : 20_000) : undefined;
  if (wanted("noisy-neighbour"))
    process.stderr.write(`noisy neighbour: ${sizes.noisySeconds} s alone, then beside a flood…\n`);
  const noisyNeighbour = wanted("noisy-neighbour")
    ? await runNoisyNeighbour(
        sizes.noisySeconds,
        wholeNumbers("flooders", [1, 8, 32]),
        wholeNumber("flooder-tenants", 1),
      )
    : undefined;
  // Only when named: a worker catching up on a backlog, one worker process per setting.
  const backlogDrain = only?.includes("backlog-drain")
    ? await runBacklogDrain(
        wholeNumber("drain-jobs", quick ? 2000 : 20_000),
        wholeNumber("drain-readings-per-job", 5),
        wholeNumbers("drain-concurrency", [4, 32]),
      )
    : undefined;
  // Only when named: a fleet reconnecting after its broker was killed, per variant of the broker's settings.
  const stormVariants = (argValue("storm-variants") ?? "before,after").split(",");
  const reconnectStorm = only?.includes("reconnect-storm")
    ? await runReconnectStorm(
        {
          agents: wholeNumber("storm-agents", quick ? 500 : 5000),
          tenants: wholeNumber("storm-tenants", 10),
          connectionRate: wholeNumber("storm-rate", loadConfig({}).MQTT_MAX_CONNECTION_RATE),
          intervalMs: wholeNumber("storm-interval-ms", 5000),
          jitterMs: wholeNumber("storm-jitter-ms", 500),
          connackTimeoutMs: wholeNumber("storm-connack-timeout-ms", 10_000),
        },
        stormVariants.map((name) => {
          const settings = STORM_VARIANTS[name];
          if (!settings) {
            console.error(`bench: --storm-variants takes ${Object.keys(STORM_VARIANTS).join(", ")} (got "${name}")`);
            process.exit(2);
          }
          return { name, settings };
        }),
      )
    : undefined;
  // Only when named: the same readings as JSON, line protocol and OTLP over HTTP.
  const formats = only?.includes("formats")
    ? await runFormats(
        wholeNumber("formats-requests", quick ? 200 : 2000),
        wholeNumber("formats-times", 10),
        wholeNumber("formats-concurrency", 8),
        wholeNumber("formats-rounds", 3),
      )
    : undefined;
  // Only when named: new connections per second over TCP and TLS, with and without client certificates.
  const tlsHandshake = only?.includes("tls-handshake")
    ? await runTlsHandshake(
        wholeNumber("handshake-connections", quick ? 200 : 2000),
        wholeNumber("handshake-concurrency", 20),
        wholeNumber("handshake-rounds", 3),
      )
    : undefined;
  // Up to half an hour: in a whole run and on its own (--only=storage), never in --quick.
  const storageSizes = wholeNumbers("storage-sizes", [0, 10_000_000, 30_000_000], 0);
  const storagePartitionHours = wholeNumber("storage-partition-hours", 24);
  const storage = wanted("storage") && !quick ? await runStorage(storageSizes, storagePartitionHours) : undefined;
  // Only when named: seven more minutes (at 30 M) that a whole run does not need.
  const storageHistory =
    only?.includes("storage-history") && !quick
      ? await runStorageHistory(wholeNumber("storage-history-readings", 30_000_000), storagePartitionHours)
      : undefined;

  const results = {
    date: new Date().toISOString(),
    command: `npm run bench -- ${process.argv.slice(2).join(" ")}`.trim().replace(/ --$/, ""),
    durationSeconds: Math.round((Date.now() - started) / 1000),
    machine: {
      cpus: os.cpus().length,
      cpuModel: os.cpus()[0]?.model,
      memoryGiB: Math.round(os.totalmem() / 2 ** 30),
      node: process.version,
    },
    sizes,
    rounds,
    scenarios,
    ratios,
    medianRatios,
    insert,
    insertCost,
    idle,
    footprint,
    noisyNeighbour,
    backlogDrain,
    formats,
    tlsHandshake,
    reconnectStorm,
    soak,
    storageHistory,
    storage,
  };

  if (scenarios.length > 0) {
    // With --rounds, a flat-out run's name carries its round.
    const label = (s: { scenario: string; round?: number | string; protocol?: 4 | 5 }) => {
      const name = s.protocol === 5 ? `${s.scenario} (MQTT 5)` : s.scenario;
      return typeof s.round === "string"
        ? `${name} (${s.round})`
        : rounds > 1 && s.round !== undefined
          ? `${name} #${s.round}`
          : name;
    };
    console.log(
      `\n${sizes.publishers} publishers × ${fmt(sizes.messages)} messages, ${sizes.inflight} in flight each, on ${results.machine.cpus} × ${results.machine.cpuModel}\n`,
    );
    console.log(
      table(
        [
          "scenario",
          "QoS",
          "paced at msg/s",
          "acked",
          "stored",
          "acked/s",
          "stored/s",
          "acked∧stored/s",
          "acked, not stored",
          "dropped (counted)",
          "PUBACK p50/p99 ms",
          "warm-up PUBACK p99 ms",
          "publish→row p50/p99 ms",
        ],
        scenarios.map((s) => [
          label(s),
          s.qos,
          fmt(s.pacedAt),
          fmt(s.acknowledged),
          fmt(s.stored),
          fmt(s.acknowledgedPerSecond),
          fmt(s.storedPerSecond),
          fmt(s.acknowledgedAndStoredPerSecond),
          fmt(s.acknowledgedNotStored),
          fmt(s.counters?.edge_ingest_mqtt_qos0_dropped_total),
          `${fmt(s.pubackP50Ms, 1)} / ${fmt(s.pubackP99Ms, 1)}`,
          fmt(s.warmupPubackP99Ms, 1),
          `${fmt(s.publishToRowP50Ms, 0)} / ${fmt(s.publishToRowP99Ms, 0)}`,
        ]),
      ),
    );
    console.log(
      `\n${table(
        ["scenario", "QoS", "paced", "process", "CPU s", "peak RSS MiB", "CPU µs a message"],
        scenarios.flatMap((s) => {
          const micros = Object.entries(s.cpuMicrosPerMessage);
          const all = micros.reduce((sum, [, value]) => sum + value, 0);
          return [
            ...micros.map(([name, value]) => [
              label(s),
              s.qos,
              s.pacedAt ? "yes" : "",
              name,
              fmt(s.processes[name]?.cpuSeconds, 1),
              fmt(s.processes[name]?.peakRssMiB),
              fmt(value, 1),
            ]),
            [label(s), s.qos, s.pacedAt ? "yes" : "", "all", "", "", fmt(all, 1)],
          ];
        }),
      )}`,
    );
    const withCommands = scenarios.filter((s) => s.redisCommandsPerMessage !== undefined);
    if (withCommands.length > 0) {
      console.log(
        `\n${table(
          ["scenario", "QoS", "paced", "Redis commands a message"],
          withCommands.map((s) => [label(s), s.qos, s.pacedAt ? "yes" : "", fmt(s.redisCommandsPerMessage ?? null, 2)]),
        )}`,
      );
    }
    console.log(
      `\n${table(
        ["scenario", "QoS", "× seed-architecture", "× aedes-bare", "× MQTT 3.1.1", "× unreplicated"],
        [...ratios, ...(medianRatios ?? []).map((r) => ({ ...r, round: "median" }))].map((r) => [
          label(r),
          r.qos,
          fmt(r.vsSeedArchitecture, 2),
          fmt(r.vsAedesBare, 2),
          fmt(r.vsMqtt311, 3),
          fmt(r.vsUnreplicated, 3),
        ]),
      )}`,
    );
  }
  if (insert) {
    console.log(
      `\n${table(
        ["database", "rows", "production insert rows/s", "createMany rows/s", "×"],
        insert.map((r) => [
          r.database,
          fmt(r.rows),
          fmt(r.productionRowsPerSecond),
          fmt(r.createManyRowsPerSecond),
          fmt(r.ratio, 1),
        ]),
      )}`,
    );
  }
  if (insertCost) {
    console.log(
      `\n${table(
        ["readings a statement", "dedupe ids", "PostgreSQL CPU µs a reading", "readings/s"],
        insertCost.variants.map((v) => [
          v.readingsPerStatement,
          v.dedupeIds ? "yes" : "no",
          fmt(v.postgresCpuMicrosPerReading, 1),
          fmt(v.readingsPerSecond),
        ]),
      )}\nPostgreSQL a statement: ${fmt(insertCost.fixedMicrosPerStatement)} µs fixed + ${fmt(insertCost.microsPerReading, 1)} µs a reading; dedupe ids ${fmt(insertCost.dedupeMicrosPerReading, 1)} µs a reading`,
    );
  }
  if (idle) {
    console.log(
      `\n${table(
        [
          "idle connections",
          "broker RSS before MiB",
          "peak while settling MiB",
          "settled MiB",
          "KiB per connection at peak",
          "KiB per connection settled",
        ],
        idle.map((r) => [
          fmt(r.connections),
          fmt(r.rssBeforeMiB),
          fmt(r.rssPeakMiB),
          fmt(r.rssAfterMiB),
          fmt(r.kibPerConnectionAtPeak, 1),
          fmt(r.kibPerConnection, 1),
        ]),
      )}`,
    );
  }
  if (footprint) {
    const of = (role: string, from: string) => footprint.find((r) => r.role === role && r.from === from);
    console.log(
      `\n${table(
        [
          "role, no client, 20 s after start",
          "RSS MiB (build)",
          "RSS MiB (sources, tsx)",
          "× sources",
          "start s (build)",
          "start s (sources)",
        ],
        [...new Set(footprint.map((r) => r.role))].map((role) => {
          const built = of(role, "build");
          const sources = of(role, "sources");
          return [
            role,
            fmt(built?.rssMiB),
            fmt(sources?.rssMiB),
            fmt(built && sources ? built.rssMiB / sources.rssMiB : null, 2),
            fmt(built?.startSeconds, 1),
            fmt(sources?.startSeconds, 1),
          ];
        }),
      )}`,
    );
  }
  if (soak) {
    console.log(
      `\n${table(
        ["soak process", "RSS after warm-up MiB", "at the end MiB", "max MiB", "slope MiB / 10 min"],
        Object.entries(soak.trend).map(([name, t]) => [
          name,
          fmt(t.firstMiB),
          fmt(t.lastMiB),
          fmt(t.maxMiB),
          fmt(t.slopeMiBPer10Min, 1),
        ]),
      )}\nsoak: ${fmt(soak.ratePerSecond)} readings/s offered for ${soak.seconds} s, ${fmt(soak.acknowledgedPerSecond)}/s acknowledged, ${fmt(soak.acknowledged)} acknowledged, ${fmt(soak.acknowledgedNotStored)} acknowledged but not stored`,
    );
  }
  if (noisyNeighbour) {
    const { alone, floods, limits } = noisyNeighbour;
    console.log(
      `\n${table(
        [
          "noisy neighbour",
          "steady PUBACK p50 ms",
          "p99 ms",
          "p99 × alone",
          "acknowledged",
          "flood accepted/s",
          "its budget/s",
          "× budget",
        ],
        [
          ["steady agent alone", fmt(alone.p50Ms, 1), fmt(alone.p99Ms, 1), "—", fmt(alone.acknowledged), "—", "—", "—"],
          ...floods.map((flood) => [
            `beside ${flood.agents} flooding agent${flood.agents > 1 ? "s" : ""} of ${flood.tenants} tenant${flood.tenants > 1 ? "s" : ""}`,
            fmt(flood.beside.p50Ms, 1),
            fmt(flood.beside.p99Ms, 1),
            fmt(flood.p99Ratio, 2),
            fmt(flood.beside.acknowledged),
            fmt(flood.acceptedPerSecond),
            fmt(flood.budgetPerSecond),
            fmt(flood.ratioToBudget, 2),
          ]),
        ],
      )}\nlimits (the defaults): ${fmt(limits.agentPerSecond)} readings/s an agent (burst ${fmt(limits.agentBurst)}), ${fmt(limits.tenantPerSecond)} a tenant (burst ${fmt(limits.tenantBurst)})`,
    );
  }
  if (backlogDrain) {
    const [first] = backlogDrain.runs;
    console.log(
      `\n${table(
        [
          "backlog drain: WORKER_CONCURRENCY",
          "seconds",
          "readings/s",
          "× first",
          "worker CPU s/1k readings",
          "worker cores",
          "PostgreSQL cores",
          "Redis cores",
          "stored",
        ],
        backlogDrain.runs.map((run) => [
          String(run.concurrency),
          fmt(run.seconds, 1),
          fmt(run.readingsPerSecond),
          fmt(first ? run.readingsPerSecond / first.readingsPerSecond : null, 2),
          fmt(run.workerCpuPerThousand, 3),
          fmt(run.workerCoreShare, 2),
          fmt(run.postgresqlCoreShare, 2),
          fmt(run.redisCoreShare, 2),
          fmt(run.stored),
        ]),
      )}\nbacklog: ${fmt(backlogDrain.jobs)} jobs of ${backlogDrain.readingsPerJob} readings, ${backlogDrain.tenants} tenants, ${fmt(backlogDrain.agents)} agents; one worker process`,
    );
  }
  if (formats) {
    console.log(
      `\n${table(
        [
          "format",
          "round",
          "readings/s acked∧stored",
          "bytes a reading",
          "API CPU µs a reading",
          "worker CPU µs",
          "PostgreSQL CPU µs",
        ],
        formats.runs.map((run) => [
          run.format,
          String(run.round),
          fmt(run.readingsPerSecond),
          fmt(run.bytesPerReading, 1),
          fmt(run.apiCpuMicros, 1),
          fmt(run.workerCpuMicros, 1),
          fmt(run.postgresqlCpuMicros, 1),
        ]),
      )}\nAPI CPU a reading against JSON's (medians): ${Object.entries(formats.apiCpuVsJson)
        .map(([format, ratio]) => `${format} ${fmt(ratio, 2)}×`)
        .join(
          ", ",
        )}; ${fmt(formats.requests)} requests of ${formats.readingsPerRequest} readings a format and round, ${formats.concurrency} at once`,
    );
  }
  if (tlsHandshake) {
    console.log(
      `\n${table(
        ["handshake", "round", "connections/s", "broker CPU µs a connection"],
        tlsHandshake.runs.map((run) => [
          run.variant,
          String(run.round),
          fmt(run.connectionsPerSecond),
          fmt(run.brokerCpuMicros),
        ]),
      )}\nconnections/s against TLS with a password (medians): ${Object.entries(tlsHandshake.vsTlsPassword)
        .map(([variant, ratio]) => `${variant} ${fmt(ratio, 2)}×`)
        .join(
          ", ",
        )}; ${fmt(tlsHandshake.connections)} connections a variant and round, ${tlsHandshake.concurrency} at once`,
    );
  }
  if (reconnectStorm) {
    const s = reconnectStorm;
    console.log(
      `\n${table(
        [
          "reconnect storm",
          "first connect s",
          "back p50 s",
          "p90 s",
          "all back s",
          "back",
          "attempts",
          "no CONNACK in time",
          "refused (code: n)",
          "kernel dropped",
          "delayed by rate",
          "acknowledged",
          "ack'd not stored",
          "duplicates",
        ],
        s.variants.map((v) => [
          v.name,
          fmt(v.firstConnectSeconds, 1),
          fmt(v.backP50, 1),
          fmt(v.backP90, 1),
          fmt(v.backMax, 1),
          fmt(v.devicesBack),
          fmt(v.attempts),
          fmt(v.timeouts),
          Object.entries(v.refusals)
            .map(([code, n]) => `${code}: ${n}`)
            .join(", ") || "0",
          fmt(v.listenOverflows),
          fmt(v.delayedByRateLimit),
          fmt(v.acknowledged),
          fmt(v.acknowledgedNotStored),
          fmt(v.duplicates),
        ]),
      )}\n${fmt(s.agents)} agents of ${s.tenants} tenants (at most ${fmt(s.connectionRate)} new connections/s, burst ${fmt(2 * s.connectionRate)}), a QoS 1 reading every ${s.intervalMs} ms each; after SIGKILL and restart, a pause of 0-${s.jitterMs} ms before each attempt, ${s.connackTimeoutMs} ms CONNACK timeout; "back" counted from the new broker's start`,
    );
  }
  if (storage) {
    const q = (r: (typeof storage)[number], key: keyof (typeof storage)[number]["queries"]) =>
      `${fmt(r.queries[key].p50Ms, 1)} / ${fmt(r.queries[key].p99Ms, 1)} (${fmt(r.queries[key].firstMs, 1)})`;
    console.log(
      `\n${table(
        [
          "readings stored",
          "in the current partition",
          "insert rows/s",
          "no history rows/s",
          "× no history",
          "bytes/reading (metrics)",
          "(all tables)",
          "(a) last hour p50/p99 (first) ms",
          "(b) 24 h series p50/p99 (first) ms",
          "(c) latest p50/p99 (first) ms",
        ],
        storage.map((r) => [
          fmt(r.rows),
          fmt(r.currentPartitionRows),
          fmt(r.insertRowsPerSecond),
          fmt(r.noHistoryInsertRowsPerSecond),
          fmt(r.insertRatio, 2),
          fmt(r.metricsBytesPerReading),
          fmt(r.allBytesPerReading),
          q(r, "lastHour"),
          q(r, "series24h"),
          q(r, "latest"),
        ]),
      )}`,
    );
  }
  if (storageHistory) {
    const { passesRowsPerSecond: passes } = storageHistory;
    const mean = (values: number[]) => values.reduce((sum, value) => sum + value, 0) / values.length;
    console.log(
      `\n${table(
        ["database", "readings", "in the current partition", "rows/s (mean of rounds)", "× nothing (median of rounds)"],
        [
          [
            "full fill",
            fmt(storageHistory.rows),
            fmt(storageHistory.currentPartitionRows),
            fmt(mean(passes.full)),
            fmt(storageHistory.fullRatio, 2),
          ],
          [
            "current partition only",
            fmt(storageHistory.currentOnlyRows),
            fmt(storageHistory.currentOnlyRows),
            fmt(mean(passes.currentOnly)),
            fmt(storageHistory.currentOnlyRatio, 2),
          ],
          ["nothing", "0", "0", fmt(mean(passes.none)), "1"],
        ],
      )}`,
    );
  }
  const dir = path.join(ROOT, "bench", "results");
  mkdirSync(dir, { recursive: true });
  // A narrowed run (--only, --qos) never overwrites the results of a whole one, and a whole run never
  // overwrites an earlier one of the same day (which the README may cite): it takes the next number.
  const partial = only || qosLevels.length < 2 ? "-partial" : "";
  const stem = `${results.date.slice(0, 10)}${quick ? "-quick" : ""}${partial}`;
  let file = path.join(dir, `${stem}.json`);
  for (let n = 2; !partial && existsSync(file); n++) file = path.join(dir, `${stem}-${n}.json`);
  writeFileSync(file, `${JSON.stringify(results, null, 2)}\n`);
  console.log(`\nresults: ${path.relative(ROOT, file)} (${results.durationSeconds} s)`);
}

await main();
