import type { MetricSubmission } from "../ingest/submission.ts";
import type { StoredMetric } from "../live/fanout.ts";
import type { Sql, Statement } from "./database.ts";
import { PartitionBounds, type Range } from "./partitions.ts";

/** Which claims an insert makes: both, unless the partitions of the submission's arrival are gone. */
interface Claims {
  submission: boolean;
  dedupe: boolean;
}

// One statement, so one transaction, for one or several submissions (a worker stores the jobs that
// arrive while its last statement runs together, so a backlog drains many at a time): each
// submission id is claimed, each dedupe_id is claimed for the dedupe window in its tenant, the
// readings are inserted, every series' latest value is moved on and each agent's readings of the
// minute are counted, or nothing is. The readings of a submission whose claim already exists (a
// retried job) are left out; a dedupe_id already seen within the window (or twice in the statement,
// in one tenant) is stored once, the first time it comes. The claim goes into the metric_dedupe
// partition of the submissions' arrival (one partition a statement), whose unique index (ON
// CONFLICT) finds an earlier claim there: so the window is searched in the other partitions only,
// which spares each reading one probe of the largest index. The submissions and readings go in as
// JSON parameters, unpacked by PostgreSQL (cheaper in Node than one array literal per column), so
// the statement text never changes; as `json`, which is read once where `jsonb` is first built.
// $1 submissions [{id, tenant, received}], $2 readings (each with its submission's position in $1,
// from 1, and its agent), $3 dedupe window (ms), $4 and $5 the bounds of the partition the claim
// goes into, $6 the latest arrival a claim can have (CLAIM_CLOCK_SKEW_MS).
//
// A submission that waited in the queue until the partitions of its arrival were dropped (an outage
// of the database longer than they are kept) claims nothing there, as no row can go into them:
// `claims` leaves out either claim. Its dedupe ids are still looked for in the partitions that
// remain; a job retried after it committed would store its readings again, where without this it
// would fail on every attempt.
function insertStatement(returning: boolean, claims: Claims): string {
  return `
WITH submitted AS (
  SELECT * FROM ROWS FROM (json_to_recordset($1::json) AS (id uuid, tenant uuid, received float8))
    WITH ORDINALITY AS s(id, tenant, received, n)
), claim AS (
  ${
    claims.submission
      ? `INSERT INTO ingest_submissions (id, tenant_id, received_at)
  SELECT id, tenant, to_timestamp(received / 1000) FROM submitted
  ON CONFLICT DO NOTHING
  RETURNING id`
      : "SELECT id FROM submitted"
  }
), readings AS (
  SELECT m.*, s.tenant, s.received, row_number() OVER (PARTITION BY s.tenant, m."dedupeId" ORDER BY m.n) AS copy
  FROM ROWS FROM (json_to_recordset($2::json)
    AS (submission int, "agentId" text, name text, value float8, ts float8, "dedupeId" text, tags jsonb))
    WITH ORDINALITY AS m(submission, "agentId", name, value, ts, "dedupeId", tags, n)
  JOIN submitted s ON s.n = m.submission
  WHERE s.id IN (SELECT id FROM claim)
), fresh AS (
  ${claims.dedupe ? "INSERT INTO metric_dedupe (tenant_id, dedupe_id, seen_at)\n  " : ""}SELECT ${
    claims.dedupe
      ? `r.tenant, r."dedupeId", to_timestamp(r.received / 1000)`
      : `r.tenant AS tenant_id, r."dedupeId" AS dedupe_id`
  }
  FROM readings r
  WHERE r."dedupeId" IS NOT NULL AND r.copy = 1 AND NOT EXISTS (
    SELECT 1 FROM metric_dedupe d
    WHERE d.tenant_id = r.tenant AND d.dedupe_id = r."dedupeId"
      AND d.seen_at >= to_timestamp((r.received - $3::float8) / 1000)
      AND (d.seen_at < to_timestamp($4::float8 / 1000) OR d.seen_at >= to_timestamp($5::float8 / 1000))
      AND d.seen_at < to_timestamp($6::float8 / 1000)
  )${claims.dedupe ? "\n  ON CONFLICT DO NOTHING\n  RETURNING tenant_id, dedupe_id" : ""}
), inserted AS (
  INSERT INTO metrics (tenant_id, agent_id, name, value, ts, dedupe_id, tags, received_at)
  SELECT r.tenant, r."agentId", r.name, r.value, to_timestamp(r.ts / 1000), r."dedupeId",
         r.tags, to_timestamp(r.received / 1000)
  FROM readings r
  WHERE r."dedupeId" IS NULL OR (r.copy = 1 AND (r.tenant, r."dedupeId") IN (SELECT tenant_id, dedupe_id FROM fresh))
  ORDER BY r.n
  RETURNING id, tenant_id, agent_id, name, value, ts, tags, received_at
), latest AS (
  INSERT INTO metric_latest (tenant_id, agent_id, name, value, ts, tags, received_at)
  SELECT DISTINCT ON (tenant_id, agent_id, name) tenant_id, agent_id, name, value, ts, tags, received_at
  FROM inserted
  ORDER BY tenant_id, agent_id, name, ts DESC
  ON CONFLICT (tenant_id, agent_id, name) DO UPDATE SET
    value = CASE WHEN excluded.ts >= metric_latest.ts THEN excluded.value ELSE metric_latest.value END,
    tags = CASE WHEN excluded.ts >= metric_latest.ts THEN excluded.tags ELSE metric_latest.tags END,
    ts = greatest(metric_latest.ts, excluded.ts),
    received_at = greatest(metric_latest.received_at, excluded.received_at)
), activity AS (
  INSERT INTO agent_activity (tenant_id, agent_id, minute, readings)
  SELECT tenant_id, agent_id, date_trunc('minute', received_at), count(*)
  FROM inserted
  GROUP BY tenant_id, agent_id, date_trunc('minute', received_at)
  ORDER BY tenant_id, agent_id
  ON CONFLICT (tenant_id, agent_id, minute) DO UPDATE SET readings = agent_activity.readings + excluded.readings
)
${
  returning
    ? "SELECT id::text AS id, tenant_id::text AS tenant_id, agent_id, name, value, to_json(ts)#>>'{}' AS ts, tags FROM inserted"
    : "SELECT count(*)::int AS inserted FROM inserted"
}`;
}

const insertStatements = new Map<string, Statement>();

/**
 * The insert statement for these choices, made once and prepared once per connection under its name
 * (planning it cost as much as a quarter of running it).
 */
function insertStatementOf(returning: boolean, claims: Claims): Statement {
  const name = `metrics_insert${returning ? "_returning" : ""}${claims.submission ? "" : "_no_submission_claim"}${
    claims.dedupe ? "" : "_no_dedupe_claim"
  }`;
  let statement = insertStatements.get(name);
  if (!statement) {
    statement = { name, text: insertStatement(returning, claims) };
    insertStatements.set(name, statement);
  }
  return statement;
}

/**
 * How far past the present (or the arrival, if later) claims are looked for. A claim is stamped with
 * its arrival, never later than now but for clocks that disagree: bounding the search leaves the
 * partitions made ahead out of the plan. Probing them cost each reading two scans of empty tables
 * (sequential ones, each asking the kernel for the file's size, once the planner knew them empty).
 */
const CLAIM_CLOCK_SKEW_MS = 10 * 60_000;
/** How long the partition bounds are kept before they are read again. */
const PARTITION_BOUNDS_TTL_MS = 60_000;

interface InsertedRow {
  id: string;
  tenant_id: string;
  agent_id: string;
  name: string;
  value: number;
  ts: string;
  tags: Record<string, string> | null;
}

function insertParameters(submissions: MetricSubmission[], dedupeWindowMs: number, claimedIn: Range | undefined) {
  // The JSON field names are the records' column names above. With no partition for the arrival (a
  // claim there would fail), the window is searched everywhere: infinite bounds.
  const readings = submissions.flatMap((submission, index) =>
    submission.metrics.map((point) => ({
      ...point,
      submission: index + 1,
      agentId: point.agentId ?? submission.agentId,
    })),
  );
  const latestArrival = Math.max(Date.now(), ...submissions.map((submission) => submission.receivedAt));
  return [
    JSON.stringify(
      submissions.map((submission) => ({
        id: submission.id,
        tenant: submission.tenantId,
        received: submission.receivedAt,
      })),
    ),
    JSON.stringify(readings),
    dedupeWindowMs,
    claimedIn?.from ?? Number.POSITIVE_INFINITY,
    claimedIn?.to ?? Number.POSITIVE_INFINITY,
    latestArrival + CLAIM_CLOCK_SKEW_MS,
  ];
}

/** What a read may see and ask for: always one tenant. */
export interface MetricFilter {
  tenantId: string;
  agentId?: string;
  name?: string;
  /** Inclusive, epoch ms. */
  from?: number;
  /** Exclusive, epoch ms. */
  to?: number;
}

export interface MetricRow {
  id: string;
  agent_id: string;
  name: string;
  value: number;
  ts: string;
  dedupe_id: string | null;
  tags: Record<string, string> | null;
  received_at: string;
  stored_at: string;
}

/** A timestamp as the API writes it: ISO-8601 in UTC with milliseconds, as JavaScript's toISOString. */
export const iso = (column: string) => `to_char(${column} AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"')`;

/** The filter as SQL conditions on `metrics`, parameters from `$first` on. */
function conditions(filter: MetricFilter, first: number): { sql: string; params: unknown[] } {
  const sql = ["tenant_id = $1::uuid"];
  const params: unknown[] = [filter.tenantId];
  const add = (condition: (n: number) => string, value: unknown) => {
    params.push(value);
    sql.push(condition(first + params.length - 2));
  };
  if (filter.agentId !== undefined) add((n) => `agent_id = $${n}`, filter.agentId);
  if (filter.name !== undefined) add((n) => `name = $${n}`, filter.name);
  if (filter.from !== undefined) add((n) => `ts >= to_timestamp($${n}::float8 / 1000)`, filter.from);
  if (filter.to !== undefined) add((n) => `ts < to_timestamp($${n}::float8 / 1000)`, filter.to);
  return { sql: sql.join(" AND "), params };
}

export const SERIES_AGGREGATES = ["avg", "min", "max", "sum", "count", "last"] as const;
export type SeriesAggregate = (typeof SERIES_AGGREGATES)[number];

const AGGREGATE_SQL: Record<SeriesAggregate, string> = {
  avg: "avg(value)",
  min: "min(value)",
  max: "max(value)",
  sum: "sum(value)",
  count: "count(*)::int",
  last: "(array_agg(value ORDER BY ts DESC))[1]",
};

export type SeriesBucket = { start: string } & Partial<Record<SeriesAggregate, number>>;

/**
 * A latest value as JSON text, in the reply's shape: to_json escapes the text columns; tags are JSON
 * already; a value is finite (ingestion refuses others), so its text is a JSON number.
 */
const LATEST_JSON = `'{"agent_id":' || to_json(agent_id)::text || ',"name":' || to_json(name)::text ||
  ',"value":' || value::text || ',"ts":"' || ${iso("ts")} || '","tags":' || coalesce(tags::text, 'null') ||
  ',"received_at":"' || ${iso("received_at")} || '"}'`;

/** Where a page of latest values ends: the series after which the next one starts. */
export type LatestPosition = {
  agentId: string;
  name: string;
};

/** A page as JSON text, written by PostgreSQL, and where the next page starts (none: this is the last). */
export interface JsonPage<Position> {
  itemsJson: string;
  next: Position | undefined;
}

/**
 * The metric tables: where the worker stores submissions and the API reads them. Every statement
 * on them is here.
 */
export class ReadingStore {
  private readonly dedupePartitions: PartitionBounds;
  private readonly submissionPartitions: PartitionBounds;

  constructor(
    private readonly sql: Sql,
    /** A dedupe_id seen again within this long of its first arrival is stored once. */
    private readonly dedupeWindowMs: number,
  ) {
    this.dedupePartitions = new PartitionBounds(sql, "metric_dedupe", PARTITION_BOUNDS_TTL_MS);
    this.submissionPartitions = new PartitionBounds(sql, "ingest_submissions", PARTITION_BOUNDS_TTL_MS);
  }

  /**
   * One statement per partition of arrival that the submissions fall into (almost always one), each
   * with the claims that partition allows.
   */
  private async insert<T>(returning: boolean, submissions: MetricSubmission[]): Promise<T[]> {
    const groups = new Map<string, { claimedIn: Range | undefined; claims: Claims; submissions: MetricSubmission[] }>();
    for (const submission of submissions) {
      const at = submission.receivedAt;
      const [claimedIn, submittedIn] = await Promise.all([
        this.dedupePartitions.holding(at),
        this.submissionPartitions.holding(at),
      ]);
      const claims = {
        submission: submittedIn !== undefined || !this.submissionPartitions.isBeforeAll(at),
        dedupe: claimedIn !== undefined || !this.dedupePartitions.isBeforeAll(at),
      };
      const key = `${claimedIn?.from}/${claims.submission}/${claims.dedupe}`;
      const group = groups.get(key) ?? { claimedIn, claims, submissions: [] };
      group.submissions.push(submission);
      groups.set(key, group);
    }
    const rows: T[] = [];
    for (const { claimedIn, claims, submissions: group } of groups.values()) {
      const statement = insertStatementOf(returning, claims);
      const parameters = insertParameters(group, this.dedupeWindowMs, claimedIn);
      rows.push(...(await this.sql<T>(statement.text, parameters, statement.name)));
    }
    return rows;
  }

  /** Stores submissions once each; returns the rows inserted (none for a replay or duplicates). */
  async store(...submissions: MetricSubmission[]): Promise<StoredMetric[]> {
    const rows = await this.insert<InsertedRow>(true, submissions);
    return rows.map((row) => ({
      id: row.id,
      tenantId: row.tenant_id,
      agentId: row.agent_id,
      name: row.name,
      value: row.value,
      ts: new Date(row.ts).toISOString(),
      tags: row.tags,
    }));
  }

  /** Stores submissions once each, as `store`, without reading the rows back. */
  async storeQuietly(...submissions: MetricSubmission[]): Promise<void> {
    await this.insert(false, submissions);
  }

  /**
   * A page of readings, newest first, from `after` (exclusive; a row's ts and id) on. Only the
   * partitions the time range touches are read (ordered by partition, each by its index).
   */
  query(filter: MetricFilter, limit: number, after?: { ts: string; id: string }): Promise<MetricRow[]> {
    const where = conditions(filter, 2);
    const params = [...where.params];
    let cursor = "";
    if (after) {
      params.push(after.ts, after.id);
      const ts = `$${params.length - 1}::timestamptz`;
      cursor = ` AND (ts < ${ts} OR (ts = ${ts} AND id < $${params.length}::bigint))`;
    }
    params.push(limit);
    return this.sql<MetricRow>(
      `SELECT id::text AS id, agent_id, name, value, ${iso("ts")} AS ts, dedupe_id, tags,
              ${iso("received_at")} AS received_at, ${iso("stored_at")} AS stored_at
       FROM metrics WHERE ${where.sql}${cursor}
       ORDER BY ts DESC, id DESC LIMIT $${params.length}`,
      params,
    );
  }

  /**
   * A metric's readings over [from, to) in buckets of `stepMs` starting at `from`, with the asked
   * aggregates per bucket; buckets without readings are left out.
   */
  series(
    filter: MetricFilter & { name: string; from: number; to: number },
    stepMs: number,
    aggregates: SeriesAggregate[],
  ): Promise<SeriesBucket[]> {
    const where = conditions(filter, 4);
    const columns = aggregates.map((agg) => `${AGGREGATE_SQL[agg]} AS "${agg}"`).join(", ");
    const bucket = "date_bin(make_interval(secs => $2::float8 / 1000), ts, to_timestamp($3::float8 / 1000))";
    return this.sql<SeriesBucket>(
      `SELECT ${iso(bucket)} AS start, ${columns}
       FROM metrics WHERE ${where.sql}
       GROUP BY ${bucket} ORDER BY ${bucket}`,
      [filter.tenantId, stepMs, filter.from, ...where.params.slice(1)],
    );
  }

  /**
   * The last value of every series of the tenant (or of one agent), by agent and name, from `after`
   * on, `limit` at most. PostgreSQL writes the page as JSON: a page of 20,000 values then costs Node
   * one string instead of 20,000 rows to parse, keep and serialize (most of the time that took was
   * garbage collection). By concatenation, as json_build_object took twice as long.
   */
  async latest(
    scope: { tenantId: string; agentId?: string },
    limit: number,
    after?: LatestPosition,
  ): Promise<JsonPage<LatestPosition>> {
    const params: unknown[] = [scope.tenantId, limit];
    let where = "tenant_id = $1::uuid";
    if (scope.agentId !== undefined) {
      params.push(scope.agentId);
      where += ` AND agent_id = $${params.length}`;
    }
    if (after) {
      params.push(after.agentId, after.name);
      where += ` AND (agent_id, name) > ($${params.length - 1}, $${params.length})`;
    }
    const [page] = await this.sql<{ items: string; more: boolean; last_agent_id: string; last_name: string }>(
      `WITH page AS (
         SELECT *, row_number() OVER (ORDER BY agent_id, name) AS n
         FROM (SELECT agent_id, name, value, ts, tags, received_at FROM metric_latest
               WHERE ${where} ORDER BY agent_id, name LIMIT $2::int + 1) AS rows
       )
       SELECT coalesce(string_agg(${LATEST_JSON}, ',' ORDER BY n) FILTER (WHERE n <= $2::int), '') AS items,
              count(*) > $2::int AS more,
              min(agent_id) FILTER (WHERE n = $2::int) AS last_agent_id,
              min(name) FILTER (WHERE n = $2::int) AS last_name
       FROM page`,
      params,
    );
    return {
      itemsJson: `[${page?.items ?? ""}]`,
      next: page?.more ? { agentId: page.last_agent_id, name: page.last_name } : undefined,
    };
  }
}
