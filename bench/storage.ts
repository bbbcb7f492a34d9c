/**
 * Storage as it grows (`npm run bench -- --only=storage`, up to half an hour): one database, filled
 * server-side to each size in turn with readings spread over the retention window; at each size the
 * production insert rate (three passes after an uncounted one, each of 100 batches of 1,000
 * readings: 100 tenants, 1,000 agents, 20 metric names, random-looking dedupe ids), the disk each
 * stored reading takes, and p50/p99 over 50 runs (after 5 uncounted, the first of them reported
 * apart) of three API reads of a tenant with 1,000 agents: (a) the last hour of one agent's metric,
 * (b) 24 hours of one metric at step=1m with agg=avg,max, (c) `latest` for the whole tenant.
 *
 * The insert's passes alternate with passes into a second database with no history: none of the
 * fill, the same passes (its partitions kept by a service of its own with the same settings). The
 * ratio of each pair compares the two at about the same moment, so the machine's drift over the half
 * hour (±15 % between passes minutes apart) leaves it alone, and what the passes themselves leave
 * behind (100,000 series and 400,000 dedupe claims a size) is in both.
 */
import { randomBytes, randomUUID } from "node:crypto";
import { performance } from "node:perf_hooks";
import pg from "pg";
import pino from "pino";
import type { MetricPoint } from "../src/ingest/submission.ts";
import { type Database, openDatabase } from "../src/store/database.ts";
import { partitionsOf, type Range } from "../src/store/partitions.ts";
import { ReadingStore } from "../src/store/readings.ts";
import { type Managed, median, percentile, stop } from "./lib/processes.ts";
import { ADMIN_TOKEN, createDatabase, deleteRedisPrefix, REDIS_URL, serviceEnv, startService } from "./lib/targets.ts";

const RETENTION_DAYS = 30;
const BATCH = 1000;
const INSERT_BATCHES = 100;
/**
 * Passes of the insert at each size, each of INSERT_BATCHES: the first, uncounted, moves the latest
 * values of its series on (at the first size it creates them, which a series pays once), and the
 * median of the others is reported: one pass of two seconds moved by ±15 % between runs.
 */
const INSERT_PASSES = 4;
const RUNS = 50;
/** Asked and not counted before the runs: a dashboard asks the same query again and again. */
const WARMUP_RUNS = 5;
const BIG_AGENTS = 1000;
const NAMES = 20;
const TENANTS = 100;

export interface StorageResult {
  /** Readings in `metrics` when measured. */
  rows: number;
  /**
   * Of them, in the partition the insert writes into: the fill's share of the day (or span) so far
   * and the passes'. It sets much of the insert's cost, and moves with the hour the run is made.
   */
  currentPartitionRows: number;
  partitionHours: number;
  /** The median of the counted passes. */
  insertRowsPerSecond: number;
  insertPassesRowsPerSecond: number[];
  /** The same into the database with no history, each pass just before or after one above. */
  noHistoryInsertRowsPerSecond: number;
  noHistoryPassesRowsPerSecond: number[];
  /** The median of the passes' ratios: this size's insert rate over no history's at the same moment. */
  insertRatio: number;
  /** Table and index bytes of `metrics` per reading. */
  metricsBytesPerReading: number;
  /** The same with the dedupe, latest-value and submission tables. */
  allBytesPerReading: number;
  queries: Record<
    "lastHour" | "series24h" | "latest",
    {
      p50Ms: number | null;
      p99Ms: number | null;
      /** The first, uncounted ask: a new database connection plans it with a cold catalog. */
      firstMs: number;
      items: number;
    }
  >;
}

/**
 * Fills `count` more readings, spread evenly over the retention window: a tenth on the dashboard agent's
 * twenty metrics (one reading each about every 17 s at 30 M), four tenths over the tenant's other
 * 999 agents, half over 99 tenants of ten agents each. Dedupe rows for the last day, as the window keeps.
 */
async function fill(
  client: pg.Client,
  tenants: string[],
  count: number,
  offset: number,
  /** How far back from now the readings are spread. */
  spanMs = RETENTION_DAYS * 86_400_000 - 3_600_000,
): Promise<void> {
  await client.query(
    `INSERT INTO metrics (tenant_id, agent_id, name, value, ts, dedupe_id, received_at)
     SELECT t.tenant,
            CASE WHEN i % 10 = 0 THEN 'agent-0' WHEN i % 10 < 5 THEN 'agent-' || (1 + i % ${BIG_AGENTS - 1})
                 ELSE 'agent-' || (i % 10) END,
            'm' || (i / 10) % ${NAMES},
            (i % 1000) + 0.5,
            t.ts,
            substr(md5(i::text), 1, 16),
            t.ts
     FROM generate_series($2::bigint, $3::bigint) AS i,
          LATERAL (SELECT CASE WHEN i % 10 < 5 THEN ($1::uuid[])[1] ELSE ($1::uuid[])[2 + i % ${TENANTS - 1}] END AS tenant,
                          now() - make_interval(secs => ($3::bigint - i)::float8 / $4::float8 * $5::float8 / 1000) AS ts) AS t`,
    [tenants, offset, offset + count - 1, count, spanMs],
  );
  await client.query(
    `INSERT INTO metric_dedupe (tenant_id, dedupe_id, seen_at)
     SELECT tenant_id, dedupe_id, received_at FROM metrics
     WHERE received_at >= now() - interval '1 day' AND dedupe_id IS NOT NULL
     ON CONFLICT DO NOTHING`,
  );
  await client.query(
    `INSERT INTO metric_latest (tenant_id, agent_id, name, value, ts, tags, received_at)
     SELECT DISTINCT ON (tenant_id, agent_id, name) tenant_id, agent_id, name, value, ts, tags, received_at
     FROM metrics ORDER BY tenant_id, agent_id, name, ts DESC
     ON CONFLICT (tenant_id, agent_id, name) DO UPDATE SET value = excluded.value, ts = excluded.ts,
       received_at = excluded.received_at`,
  );
  await client.query("VACUUM ANALYZE metrics, metric_dedupe, metric_latest");
  // The fill writes in minutes what production writes over the retention window: its gigabytes of
  // dirty pages are written out before measuring, as they long would have been.
  await client.query("CHECKPOINT");
}

/** The `metrics` partition holding the present, as the catalog has it. */
async function currentPartition(client: pg.Client): Promise<Range> {
  const partitions = await partitionsOf(async (text, params) => (await client.query(text, params)).rows, "metrics");
  const now = Date.now();
  const current = partitions.find((p) => p.from <= now && now < p.to);
  if (!current) throw new Error("no metrics partition holds the present: the service has not made it");
  return current;
}

async function sizes(
  client: pg.Client,
): Promise<{ rows: number; currentPartitionRows: number; metricsBytes: number; allBytes: number }> {
  const total = (table: string) =>
    `(SELECT coalesce(sum(pg_total_relation_size(c.oid)), 0) FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
      WHERE i.inhparent = '${table}'::regclass)`;
  const { rows } = await client.query(
    `SELECT (SELECT count(*) FROM metrics)::bigint AS rows,
            (SELECT count(*) FROM metrics WHERE ts >= to_timestamp($1::float8 / 1000))::bigint AS current,
            ${total("metrics")}::bigint AS metrics,
            ${total("metric_dedupe")} + ${total("ingest_submissions")} + pg_total_relation_size('metric_latest') AS others`,
    [(await currentPartition(client)).from],
  );
  const row = rows[0] as { rows: string; current: string; metrics: string; others: string };
  return {
    rows: Number(row.rows),
    currentPartitionRows: Number(row.current),
    metricsBytes: Number(row.metrics),
    allBytes: Number(row.metrics) + Number(row.others),
  };
}

/** Production inserts: what a worker writes now, into the hot partition. */
async function insertRate(store: ReadingStore, tenants: string[]): Promise<number> {
  const batches = Array.from({ length: INSERT_BATCHES }, (_, b) => {
    const now = Date.now();
    const metrics: MetricPoint[] = Array.from({ length: BATCH }, (_, i) => ({
      agentId: `agent-${(b * BATCH + i) % BIG_AGENTS}`,
      name: `m${i % NAMES}`,
      value: i + 0.5,
      ts: now - i,
      dedupeId: randomBytes(8).toString("hex"),
    }));
    return { tenantId: tenants[b % TENANTS] as string, metrics };
  });
  const started = performance.now();
  for (const { tenantId, metrics } of batches) {
    await store.storeQuietly({
      id: randomUUID(),
      tenantId,
      agentId: "agent-0",
      source: "mqtt",
      receivedAt: Date.now(),
      metrics,
    });
  }
  return (INSERT_BATCHES * BATCH) / ((performance.now() - started) / 1000);
}

async function latencies(url: string, token: string): Promise<StorageResult["queries"]> {
  const now = Date.now();
  const paths = {
    lastHour: `/api/v1/metrics?agent_id=agent-0&name=m3&from=${now - 3_600_000}&limit=1000`,
    series24h: `/api/v1/metrics/series?agent_id=agent-0&name=m3&from=${now - 86_400_000}&to=${now}&step=1m&agg=avg,max`,
    latest: `/api/v1/metrics/latest?limit=${BIG_AGENTS * NAMES}`,
  };
  const result = {} as StorageResult["queries"];
  for (const [query, path] of Object.entries(paths) as [keyof typeof paths, string][]) {
    const ask = async () => {
      // Until the last byte of the answer has arrived; reading it is the client's business.
      const started = performance.now();
      const response = await fetch(`${url}${path}`, { headers: { authorization: `Bearer ${token}` } });
      const bytes = await response.arrayBuffer();
      const ms = performance.now() - started;
      const body = JSON.parse(Buffer.from(bytes).toString("utf8")) as { items?: unknown[]; buckets?: unknown[] };
      return { ms, items: (body.items ?? body.buckets ?? []).length };
    };
    const first = await ask();
    for (let run = 1; run < WARMUP_RUNS; run++) await ask();
    const times: number[] = [];
    let items = 0;
    for (let run = 0; run < RUNS; run++) {
      const answer = await ask();
      times.push(answer.ms);
      items = answer.items;
    }
    times.sort((a, b) => a - b);
    result[query] = { p50Ms: percentile(times, 50), p99Ms: percentile(times, 99), firstMs: first.ms, items };
  }
  return result;
}

/**
 * What a storage scenario starts: databases, each with a service of its own keeping its partitions
 * (`METRICS_PARTITION_HOURS` = `partitionHours`, the time span of the partitions an insert writes
 * into) and a store writing into it. `close` stops and removes all of it, whatever failed.
 */
class StorageRig {
  private readonly prefix = `edge-ingest-bench-${randomBytes(4).toString("hex")}`;
  private readonly targets: { drop(): Promise<void> }[] = [];
  private readonly services: Managed[] = [];
  private readonly databases: Database[] = [];
  private readonly clients: pg.Client[] = [];
  private readonly prefixes: string[] = [];

  constructor(private readonly partitionHours: number) {}

  /** A new database and its service (`ROLES=worker` unless `extra` says more of its environment). */
  async database(name: string, extra: Record<string, string> = {}) {
    const target = await createDatabase();
    this.targets.push(target);
    const prefix = `${this.prefix}-${name}`;
    this.prefixes.push(prefix);
    const env = await serviceEnv({
      REDIS_URL,
      REDIS_PREFIX: prefix,
      ROLES: "worker",
      DATABASE_URL: target.url,
      METRICS_RETENTION_DAYS: String(RETENTION_DAYS),
      METRICS_PARTITION_HOURS: String(this.partitionHours),
      ...extra,
    });
    this.services.push(await startService(`storage-${name}`, env));
    const database = await openDatabase({ url: target.url }, { migrate: false, logger: pino({ level: "silent" }) });
    this.databases.push(database);
    return { url: target.url, env, store: new ReadingStore(database.sql, 86_400_000) };
  }

  async client(url: string): Promise<pg.Client> {
    const client = new pg.Client({ connectionString: url });
    this.clients.push(client);
    await client.connect();
    return client;
  }

  /** Every step runs even if one before it failed; the first failure is thrown at the end. */
  async close(): Promise<void> {
    const steps = [
      ...this.databases.map((database) => () => database.close()),
      ...this.clients.map((client) => () => client.end()),
      ...this.services.map((service) => () => stop(service)),
      ...this.targets.map((target) => () => target.drop()),
      ...this.prefixes.map((prefix) => () => deleteRedisPrefix(prefix)),
    ];
    const failures: unknown[] = [];
    for (const step of steps) await step().catch((error: unknown) => failures.push(error));
    if (failures.length > 0) throw failures[0];
  }
}

export async function runStorage(sizes_: number[], partitionHours: number): Promise<StorageResult[]> {
  const rig = new StorageRig(partitionHours);
  const results: StorageResult[] = [];
  try {
    const { url, env, store } = await rig.database("filled", {
      ROLES: "api,worker",
      ADMIN_TOKEN,
      QUERY_MAX_LIMIT: String(BIG_AGENTS * NAMES),
    });
    // Only its partition maintenance is used: the passes write through the store.
    const { store: noHistoryStore } = await rig.database("no-history");
    const client = await rig.client(url);
    const httpUrl = `http://127.0.0.1:${env.HTTP_PORT}`;
    const admin = async (route: string, body: unknown) => {
      const response = await fetch(`${httpUrl}${route}`, {
        method: "POST",
        headers: { authorization: `Bearer ${ADMIN_TOKEN}`, "content-type": "application/json" },
        body: JSON.stringify(body),
      });
      return (await response.json()) as Record<string, string>;
    };
    const tenants: string[] = [];
    for (let t = 0; t < TENANTS; t++)
      tenants.push((await admin("/api/v1/admin/tenants", { name: `t${t}` })).id as string);
    const token = (await admin(`/api/v1/admin/tenants/${tenants[0]}/tokens`, { role: "viewer" })).token as string;
    let filled = 0;
    for (const size of sizes_) {
      if (size > filled) {
        process.stderr.write(`storage: filling to ${size.toLocaleString("en-US")} readings…\n`);
        await fill(client, tenants, size - filled, filled);
        filled = size;
      }
      process.stderr.write(`storage: measuring at ${size.toLocaleString("en-US")}…\n`);
      await insertRate(noHistoryStore, tenants);
      await insertRate(store, tenants);
      const passes: number[] = [];
      const noHistoryPasses: number[] = [];
      // Which goes first alternates, so that neither always runs just after the other.
      for (let pass = 1; pass < INSERT_PASSES; pass++) {
        const first = pass % 2 === 1;
        if (first) noHistoryPasses.push(await insertRate(noHistoryStore, tenants));
        passes.push(await insertRate(store, tenants));
        if (!first) noHistoryPasses.push(await insertRate(noHistoryStore, tenants));
      }
      const measured = await sizes(client);
      results.push({
        rows: measured.rows,
        currentPartitionRows: measured.currentPartitionRows,
        partitionHours,
        insertRowsPerSecond: median(passes),
        insertPassesRowsPerSecond: passes,
        noHistoryInsertRowsPerSecond: median(noHistoryPasses),
        noHistoryPassesRowsPerSecond: noHistoryPasses,
        insertRatio: median(passes.map((rate, pass) => rate / (noHistoryPasses[pass] as number))),
        metricsBytesPerReading: measured.metricsBytes / Math.max(measured.rows, 1),
        allBytesPerReading: measured.allBytes / Math.max(measured.rows, 1),
        queries: await latencies(httpUrl, token),
      });
    }
  } finally {
    await rig.close();
  }
  return results;
}

export interface StorageHistoryResult {
  /** Readings the full fill holds (the fill and its top-up), and of them in its current partition. */
  rows: number;
  currentPartitionRows: number;
  /** Readings of the database that holds only the current partition's share. */
  currentOnlyRows: number;
  partitionHours: number;
  /** Each database's rows/s, one pass a round. */
  passesRowsPerSecond: Record<"full" | "currentOnly" | "none", number[]>;
  /** Medians of the rounds' ratios against the database with nothing filled. */
  fullRatio: number;
  currentOnlyRatio: number;
}

const HISTORY_ROUNDS = 6;

/**
 * Whether the insert slows with the history or with the partition it writes into
 * (`--only=storage-history`, about seven minutes at 30 M): three databases side by side, each with a service of
 * its own keeping its partitions. One is filled as the storage scenario fills it to `rows`, its
 * current partition then topped up to a whole partition's share of them (as it is at the end of its
 * span, whatever the hour of the run); one holds only that share, in the current partition; one holds
 * nothing. Then rounds of one pass into each, the order reversed every round: all three take the same
 * passes, at about the same moments.
 */
export async function runStorageHistory(rows: number, partitionHours: number): Promise<StorageHistoryResult> {
  const rig = new StorageRig(partitionHours);
  try {
    const full = await rig.database("full");
    const currentOnly = await rig.database("current-only");
    const none = await rig.database("none");
    const fullClient = await rig.client(full.url);
    const currentOnlyClient = await rig.client(currentOnly.url);
    const tenants = Array.from({ length: TENANTS }, () => randomUUID());
    process.stderr.write(`storage history: filling to ${rows.toLocaleString("en-US")} readings…\n`);
    const share = Math.round((rows * partitionHours) / (RETENTION_DAYS * 24));
    // Spread over the current partition so far.
    const sinceItsStart = async () => Date.now() - (await currentPartition(fullClient)).from;
    await fill(fullClient, tenants, rows, 0);
    const filled = await sizes(fullClient);
    const topUp = Math.max(0, share - filled.currentPartitionRows);
    // Its own dedupe ids: numbered on from the fill's.
    if (topUp > 0) await fill(fullClient, tenants, topUp, rows, await sinceItsStart());
    await fill(currentOnlyClient, tenants, share, 0, await sinceItsStart());
    process.stderr.write("storage history: measuring…\n");
    const stores = { full: full.store, currentOnly: currentOnly.store, none: none.store };
    const kinds = Object.keys(stores) as (keyof typeof stores)[];
    for (const kind of kinds) await insertRate(stores[kind], tenants);
    const passes = { full: [] as number[], currentOnly: [] as number[], none: [] as number[] };
    for (let round = 0; round < HISTORY_ROUNDS; round++) {
      for (const kind of round % 2 === 0 ? kinds : kinds.toReversed())
        passes[kind].push(await insertRate(stores[kind], tenants));
    }
    const ratio = (kind: "full" | "currentOnly") =>
      median(passes[kind].map((rate, round) => rate / (passes.none[round] as number)));
    return {
      rows: filled.rows + topUp,
      currentPartitionRows: filled.currentPartitionRows + topUp,
      currentOnlyRows: share,
      partitionHours,
      passesRowsPerSecond: passes,
      fullRatio: ratio("full"),
      currentOnlyRatio: ratio("currentOnly"),
    };
  } finally {
    await rig.close();
  }
}
