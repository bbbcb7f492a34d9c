import type { Sql } from "./database.ts";

/**
 * The reads a broker or API process makes for each new connection and each tenant it meets. They
 * go to the driver like the metric statements: a process that only authenticates and applies
 * limits then never starts Prisma's query compiler, about 75 MiB of WebAssembly per process
 * (measured in the footprint benchmark). Prisma keeps the writes and the admin reads.
 */
export interface CredentialRecord {
  username: string;
  role: "agent" | "ingest" | "viewer";
  tenantId: string;
  agentId: string | null;
  secretHash: string;
  revokedAt: Date | null;
}

/** The credentials of these usernames, those that exist (one query however many are asked). */
export async function findCredentials(sql: Sql, usernames: string[]): Promise<CredentialRecord[]> {
  return sql<CredentialRecord>(
    `SELECT username, role::text AS role, tenant_id::text AS "tenantId", agent_id AS "agentId",
       secret_hash AS "secretHash", revoked_at AS "revokedAt"
     FROM credentials WHERE username = ANY($1::text[])`,
    [usernames],
  );
}

/** A tenant's row of `tenant_limits`, the given columns only (constants of src/limits, never client input). */
export async function findTenantLimits(
  sql: Sql,
  tenantId: string,
  columns: readonly string[],
): Promise<Record<string, number | null> | undefined> {
  const [row] = await sql<Record<string, number | null>>(
    `SELECT ${columns.join(", ")} FROM tenant_limits WHERE tenant_id = $1::uuid`,
    [tenantId],
  );
  return row;
}
