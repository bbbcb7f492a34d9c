import type { Logger } from "pino";
import type { Sql } from "./database.ts";
import type { SqlSession } from "./migrate.ts";

const HOUR = 3_600_000;

export interface Range {
  from: number;
  to: number;
}

export interface Partition extends Range {
  name: string;
}

/** The name of a table's partition starting at `from`: `metrics_p20261127_00` (UTC). */
export function partitionName(table: string, from: number): string {
  const iso = new Date(from).toISOString();
  return `${table}_p${iso.slice(0, 4)}${iso.slice(5, 7)}${iso.slice(8, 10)}_${iso.slice(11, 13)}`;
}

/**
 * Which partitions a table needs: every `intervalMs` slot (aligned to UTC midnight) from `keepFrom`
 * up to `coverUntil`, less what existing partitions cover already (partitions made at another
 * interval stay and are filled around); and which to drop: those wholly older than `keepFrom`.
 */
export function partitionPlan(
  existing: Partition[],
  keepFrom: number,
  coverUntil: number,
  intervalMs: number,
): { create: Range[]; drop: Partition[] } {
  const create: Range[] = [];
  const kept = existing.filter((p) => p.to > keepFrom);
  const first = Math.floor(keepFrom / intervalMs) * intervalMs;
  for (let from = first; from < coverUntil; from += intervalMs) {
    let uncovered: Range[] = [{ from, to: from + intervalMs }];
    for (const p of kept) {
      uncovered = uncovered.flatMap((r) =>
        p.to <= r.from || p.from >= r.to
          ? [r]
          : [
              ...(p.from > r.from ? [{ from: r.from, to: p.from }] : []),
              ...(p.to < r.to ? [{ from: p.to, to: r.to }] : []),
            ],
      );
    }
    create.push(...uncovered);
  }
  return { create, drop: existing.filter((p) => p.to <= keepFrom) };
}

export interface RetentionSettings {
  partitionHours: number;
  metricsRetentionDays: number;
  /** How far ahead of now a reading's time may be (partitions must exist for it). */
  futureSkewMs: number;
  dedupeWindowHours: number;
  submissionRetentionHours: number;
}

interface ManagedTable {
  table: string;
  /** What each partition gets besides the parent's indexes. */
  unique?: string;
  keepMs: (s: RetentionSettings) => number;
  aheadMs: (s: RetentionSettings) => number;
}

/**
 * The partitioned tables and how long each keeps its rows. One more interval than asked is kept (a
 * submission waiting in the queue still finds its partition); partitions exist that far back and
 * two intervals ahead, so a reading of any accepted time has one.
 */
const TABLES: ManagedTable[] = [
  {
    table: "metrics",
    keepMs: (s) => s.metricsRetentionDays * 24 * HOUR,
    aheadMs: (s) => s.futureSkewMs,
  },
  {
    table: "metric_dedupe",
    unique: '("tenant_id", "dedupe_id")',
    keepMs: (s) => s.dedupeWindowHours * HOUR,
    aheadMs: () => 0,
  },
  {
    table: "ingest_submissions",
    keepMs: (s) => s.submissionRetentionHours * HOUR,
    aheadMs: () => 0,
  },
];

/** How long per-minute reading counts are kept (the agents API reads the last hour of them). */
const ACTIVITY_KEEP_MS = 2 * HOUR;

/** Ours and `prisma migrate`'s are other keys: maintenance runs in one process of the deployment at a time. */
const MAINTENANCE_LOCK = 72707370;

const BOUND = /FROM \('([^']+)'\) TO \('([^']+)'\)/;

/** A table's partitions and their bounds, as the catalog has them now. */
export async function partitionsOf(query: Sql, table: string): Promise<Partition[]> {
  const rows = await query<{ name: string; bound: string }>(
    `SELECT c.relname AS name, pg_get_expr(c.relpartbound, c.oid) AS bound
     FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
     WHERE i.inhparent = $1::regclass`,
    [table],
  );
  return rows.flatMap(({ name, bound }) => {
    const match = BOUND.exec(bound);
    return match ? [{ name, from: Date.parse(match[1] as string), to: Date.parse(match[2] as string) }] : [];
  });
}

const quoted = (name: string) => `"${name.replaceAll('"', '""')}"`;

/**
 * Creates the partitions the tables will need and drops the ones past their retention (whole
 * partitions, never DELETE), and prunes the small per-minute activity counts. Skips, returning nothing, when another process holds the maintenance lock.
 */
export async function maintainPartitions(
  session: SqlSession,
  settings: RetentionSettings,
  logger: Logger,
  now = Date.now(),
): Promise<{ created: string[]; dropped: string[] } | undefined> {
  const [lock] = await session.query<{ locked: boolean }>("SELECT pg_try_advisory_lock($1) AS locked", [
    MAINTENANCE_LOCK,
  ]);
  if (!lock?.locked) return undefined;
  const created: string[] = [];
  const dropped: string[] = [];
  try {
    const intervalMs = settings.partitionHours * HOUR;
    for (const managed of TABLES) {
      const keepFrom = now - managed.keepMs(settings) - intervalMs;
      const coverUntil = now + managed.aheadMs(settings) + 2 * intervalMs;
      const plan = partitionPlan(
        await partitionsOf((text, params) => session.query(text, params), managed.table),
        keepFrom,
        coverUntil,
        intervalMs,
      );
      for (const range of plan.create) {
        const name = partitionName(managed.table, range.from);
        const from = new Date(range.from).toISOString();
        const to = new Date(range.to).toISOString();
        await session.exec(
          `CREATE TABLE IF NOT EXISTS ${quoted(name)} PARTITION OF ${quoted(managed.table)} FOR VALUES FROM ('${from}') TO ('${to}');` +
            (managed.unique
              ? `CREATE UNIQUE INDEX IF NOT EXISTS ${quoted(`${name}_key`)} ON ${quoted(name)} ${managed.unique};`
              : ""),
        );
        created.push(name);
      }
      for (const partition of plan.drop) {
        await session.exec(`DROP TABLE IF EXISTS ${quoted(partition.name)}`);
        dropped.push(partition.name);
      }
    }
    // Per-minute counts of readings: only the last hour is ever read.
    await session.query("DELETE FROM agent_activity WHERE minute < to_timestamp($1::float8 / 1000)", [
      now - ACTIVITY_KEEP_MS,
    ]);
  } finally {
    await session.query("SELECT pg_advisory_unlock($1)", [MAINTENANCE_LOCK]);
  }
  if (created.length > 0 || dropped.length > 0) {
    logger.info({ created: created.length, dropped }, "partitions maintained");
  }
  return { created, dropped };
}

/**
 * Which partition of a table holds a given time, from the catalog's bounds kept for `ttlMs`: read
 * again sooner when a time falls after or between the known partitions (one made since). Maintenance only
 * adds partitions ahead and drops whole old ones, so a bound once read stays true until its
 * partition is dropped.
 */
export class PartitionBounds {
  private partitions: Partition[] = [];
  private readAt = Number.NEGATIVE_INFINITY;
  private reading: Promise<void> | undefined;

  constructor(
    private readonly sql: Sql,
    private readonly table: string,
    private readonly ttlMs: number,
  ) {}

  /** The partition holding `at`; undefined when there is none. */
  async holding(at: number, now = Date.now()): Promise<Range | undefined> {
    if (now - this.readAt < this.ttlMs) {
      const known = this.find(at);
      // A time before every partition stays so: maintenance drops old partitions, it does not make
      // them again (a backlog of jobs that outlived theirs would otherwise read the catalog each).
      if (known || this.isBeforeAll(at)) return known;
    }
    this.reading ??= partitionsOf(this.sql, this.table)
      .then((partitions) => {
        this.partitions = partitions;
        this.readAt = now;
      })
      .finally(() => {
        this.reading = undefined;
      });
    await this.reading;
    return this.find(at);
  }

  /** Whether `at` is older than every partition read (its own was dropped), as `holding` last read them. */
  isBeforeAll(at: number): boolean {
    return this.partitions.length > 0 && this.partitions.every((p) => at < p.from);
  }

  private find(at: number): Range | undefined {
    return this.partitions.find((p) => p.from <= at && at < p.to);
  }
}
