import type { PrismaClient } from "../generated/prisma/client.ts";
import type { MetricSubmission } from "../ingest/submission.ts";
import type { StoredMetric } from "../live/fanout.ts";

// One statement, so one transaction: the submission id is claimed and every row inserted, or
// nothing is. A retried job whose claim already exists inserts nothing; a repeated dedupe_id is
// skipped. The readings go in as one JSON parameter, unpacked by PostgreSQL (cheaper in Node than
// one array literal per column), so the statement text never changes.
function insertStatement(returning: boolean): string {
  return `
WITH claim AS (
  INSERT INTO ingest_submissions (id, tenant_id, received_at)
  VALUES ($1::uuid, $2::uuid, to_timestamp($3::float8 / 1000))
  ON CONFLICT (id) DO NOTHING
  RETURNING id
)
INSERT INTO metrics (tenant_id, agent_id, name, value, ts, dedupe_id, tags, received_at)
SELECT $2::uuid, coalesce(m."agentId", $4::text), m.name, m.value, to_timestamp(m.ts / 1000), m."dedupeId",
       m.tags, to_timestamp($3::float8 / 1000)
FROM jsonb_to_recordset($5::jsonb)
  AS m("agentId" text, name text, value float8, ts float8, "dedupeId" text, tags jsonb)
WHERE EXISTS (SELECT 1 FROM claim)
ON CONFLICT DO NOTHING
${returning ? "RETURNING id::text AS id, agent_id, name, value, to_json(ts)#>>'{}' AS ts, tags" : ""}`;
}
const INSERT_RETURNING = insertStatement(true);
const INSERT_ONLY = insertStatement(false);

interface InsertedRow {
  id: string;
  agent_id: string;
  name: string;
  value: number;
  ts: string;
  tags: Record<string, string> | null;
}

function parameters(submission: MetricSubmission): unknown[] {
  // The readings' JSON field names are the record's column names above.
  return [
    submission.id,
    submission.tenantId,
    submission.receivedAt,
    submission.agentId,
    JSON.stringify(submission.metrics),
  ];
}

/** Stores a submission once; returns the rows it inserted (none for a replay or duplicates). */
export async function storeSubmission(prisma: PrismaClient, submission: MetricSubmission): Promise<StoredMetric[]> {
  const rows = await prisma.$queryRawUnsafe<InsertedRow[]>(INSERT_RETURNING, ...parameters(submission));
  return rows.map((row) => ({
    id: row.id,
    tenantId: submission.tenantId,
    agentId: row.agent_id,
    name: row.name,
    value: row.value,
    ts: new Date(row.ts).toISOString(),
    tags: row.tags,
  }));
}

/** Stores a submission once, as `storeSubmission`, without reading the rows back. */
export async function storeSubmissionQuietly(prisma: PrismaClient, submission: MetricSubmission): Promise<void> {
  await prisma.$executeRawUnsafe(INSERT_ONLY, ...parameters(submission));
}

/** Forgets submission ids older than the retention, long after any retry of them could run. */
export async function pruneSubmissions(prisma: PrismaClient, olderThan: Date): Promise<number> {
  const { count } = await prisma.ingestSubmission.deleteMany({ where: { receivedAt: { lt: olderThan } } });
  return count;
}
