import { createReadStream } from "node:fs";
import path from "node:path";
import { createInterface } from "node:readline";
import { PGlite } from "@electric-sql/pglite";
import pg from "pg";

export interface RowStats {
  rows: number;
  lastStoredAt: number | null;
  publishToRowP50Ms: number | null;
  publishToRowP99Ms: number | null;
  /** Acknowledged readings (by dedupe id) with no row. */
  acknowledgedNotStored: number;
}

type Query = (sql: string, params: unknown[]) => Promise<Record<string, unknown>[]>;

const STATS_SQL = `
SELECT count(*)::int AS rows,
       (extract(epoch FROM max(stored_at)) * 1000)::float8 AS last_stored_at,
       percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM stored_at - ts) * 1000)::float8 AS p50,
       percentile_cont(0.99) WITHIN GROUP (ORDER BY extract(epoch FROM stored_at - ts) * 1000)::float8 AS p99
FROM metrics WHERE tenant_id = $1`;

/** Ids sent to the database at a time. */
const ACKED_CHUNK = 50_000;

/**
 * Acknowledged dedupe ids with no row, compared by the database: a ten-minute soak acknowledges
 * more ids than a JavaScript Set can hold (2^24) and more rows than the bench's heap could.
 */
async function countNotStored(query: Query, tenantId: string, ackedFile: string): Promise<number> {
  await query("CREATE TEMP TABLE bench_acked (dedupe_id text NOT NULL)", []);
  try {
    let chunk: string[] = [];
    const flush = async () => {
      if (chunk.length > 0) await query("INSERT INTO bench_acked SELECT unnest($1::text[])", [chunk]);
      chunk = [];
    };
    for await (const id of createInterface({ input: createReadStream(ackedFile) })) {
      if (id === "") continue;
      chunk.push(id);
      if (chunk.length === ACKED_CHUNK) await flush();
    }
    await flush();
    const [row] = await query(
      `SELECT count(*)::int AS n FROM bench_acked a
       WHERE NOT EXISTS (SELECT 1 FROM metrics m WHERE m.tenant_id = $1 AND m.dedupe_id = a.dedupe_id)`,
      [tenantId],
    );
    return Number(row?.n ?? 0);
  } finally {
    await query("DROP TABLE bench_acked", []);
  }
}

async function measure(query: Query, tenantId: string, ackedFile: string | undefined): Promise<RowStats> {
  const [stats] = await query(STATS_SQL, [tenantId]);
  const acknowledgedNotStored = ackedFile ? await countNotStored(query, tenantId, ackedFile) : 0;
  const number = (value: unknown) => (value === null || value === undefined ? null : Number(value));
  return {
    rows: Number(stats?.rows ?? 0),
    lastStoredAt: number(stats?.last_stored_at),
    publishToRowP50Ms: number(stats?.p50),
    publishToRowP99Ms: number(stats?.p99),
    acknowledgedNotStored,
  };
}

/**
 * Waits until the tenant has `expected` rows or the count stops moving for `quietMs`, calls
 * `whenStored` (before the measuring queries add their own work to the database's), then measures.
 * The workers drain the queue after the publishers are done.
 */
export async function measurePostgres(
  url: string,
  tenantId: string,
  expected: number,
  ackedFile: string | undefined,
  whenStored: () => Promise<void>,
  quietMs = 5000,
): Promise<RowStats> {
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  try {
    const query: Query = async (sql, params) => (await client.query(sql, params)).rows;
    let last = -1;
    let lastChange = Date.now();
    for (;;) {
      const [row] = await query("SELECT count(*)::int AS n FROM metrics WHERE tenant_id = $1", [tenantId]);
      const count = Number(row?.n ?? 0);
      if (count >= expected) break;
      if (count !== last) {
        last = count;
        lastChange = Date.now();
      } else if (Date.now() - lastChange > quietMs) break;
      await new Promise((resolve) => setTimeout(resolve, 200));
    }
    await whenStored();
    return await measure(query, tenantId, ackedFile);
  } finally {
    await client.end();
  }
}

/** The embedded database, opened after its server stopped (PGlite has one user at a time). */
export async function measurePglite(
  dataDir: string,
  tenantId: string,
  ackedFile: string | undefined,
): Promise<RowStats> {
  const db = await PGlite.create(path.join(dataDir, "pglite"));
  try {
    return await measure(
      async (sql, params) => (await db.query<Record<string, unknown>>(sql, params)).rows,
      tenantId,
      ackedFile,
    );
  } finally {
    await db.close();
  }
}
