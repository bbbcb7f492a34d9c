import { existsSync } from "node:fs";
import { mkdir } from "node:fs/promises";
import path from "node:path";
import type { PGlite } from "@electric-sql/pglite";
import pg from "pg";
import type { Logger } from "pino";
import type { PrismaClient } from "../generated/prisma/client.ts";
import { migrate, type SqlSession } from "./migrate.ts";

/**
 * A statement and its parameters, straight to the driver: the metric hot path does not go through
 * Prisma. A named statement is prepared once per connection.
 */
export type Sql = <T>(text: string, params: unknown[], name?: string) => Promise<T[]>;

/** A statement run often enough to be prepared under its name. */
export interface Statement {
  name: string;
  text: string;
}

export interface Database {
  backend: "postgresql" | "pglite";
  /** Prisma, loaded and created at the first call: brokers and workers never need it (src/store/lookups.ts). */
  prisma(): Promise<PrismaClient>;
  sql: Sql;
  /** Throws unless the database answers. */
  ping(): Promise<void>;
  /** Runs `work` on one session of its own (advisory locks are per session). */
  withSession<T>(work: (session: SqlSession) => Promise<T>): Promise<T>;
  close(): Promise<void>;
}

/**
 * PGlite's buffer cache lives in its WebAssembly memory, which never shrinks. A quarter of
 * PostgreSQL's default 128 MB: an embedded service restarted on its data directory holds about
 * 270 MiB instead of 390 at the same QoS 1 throughput (`npm run bench -- --only=footprint` and
 * `--only=edge-ingest-embedded`).
 */
const PGLITE_SHARED_BUFFERS = "32MB";

/** Connections of the metric store's own pool (Prisma keeps its own for everything else). */
const SQL_POOL_SIZE = 10;
/**
 * How long an idle connection of that pool stays open: longer than a dashboard waits between two
 * asks, as a new connection plans its first query over the partitions with a cold catalog (6-15 ms
 * more at 30 partitions; pg's default closed them after 10 s).
 */
const SQL_IDLE_MS = 300_000;

/**
 * PostgreSQL by URL (with the longest a connect or a statement may take before it fails as
 * unavailable: a server that stops answering becomes an error, not a hang), or PGlite in a directory.
 */
export type DatabaseTarget = { url: string; timeoutMs?: number } | { dataDir: string };

function pgliteSession(db: PGlite): SqlSession {
  return {
    query: async <T>(sql: string, params?: unknown[]) => (await db.query<T>(sql, params)).rows,
    exec: async (sql: string) => {
      await db.exec(sql);
    },
  };
}

function pgSession(client: pg.Client): SqlSession {
  return {
    query: async <T>(sql: string, params?: unknown[]) => (await client.query(sql, params)).rows as T[],
    exec: async (sql: string) => {
      await client.query(sql);
    },
  };
}

/**
 * Prisma's client module and its query compiler (WebAssembly) cost a process about 90 MiB: made at
 * the first call, so only a process that writes tenants and credentials (the API) pays for them.
 */
function prismaOnFirstUse(
  adapter: () => Promise<NonNullable<ConstructorParameters<typeof PrismaClient>[0]["adapter"]>>,
) {
  let client: Promise<PrismaClient> | undefined;
  const create = async () => {
    const [{ PrismaClient }, options] = await Promise.all([import("../generated/prisma/client.ts"), adapter()]);
    return new PrismaClient({ adapter: options });
  };
  return {
    prisma: () =>
      (client ??= create().catch((error: unknown) => {
        client = undefined;
        throw error;
      })),
    close: async () => {
      if (client) await (await client.catch(() => undefined))?.$disconnect();
    },
  };
}

/** Runs `work` on a connection of its own. */
async function withPgSession<T>(url: string, work: (session: SqlSession) => Promise<T>): Promise<T> {
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  try {
    return await work(pgSession(client));
  } finally {
    await client.end();
  }
}

/** Runs pending migrations on a dedicated connection (the advisory lock is per session). */
export function migratePostgres(url: string, logger: Logger): Promise<string[]> {
  return withPgSession(url, (session) => migrate(session, logger));
}

/** Where PGlite keeps the embedded database inside DATA_DIR. */
const pgliteDir = (dataDir: string) => path.join(dataDir, "pglite");

/** Whether the embedded database in DATA_DIR has been created (PostgreSQL writes PG_VERSION first). */
export function embeddedDatabaseExists(dataDir: string): boolean {
  return existsSync(path.join(pgliteDir(dataDir), "PG_VERSION"));
}

async function openPglite(dataDir: string): Promise<PGlite> {
  const dir = pgliteDir(dataDir);
  await mkdir(dir, { recursive: true });
  // Loaded only in embedded mode: a distributed process never needs the WebAssembly PostgreSQL.
  const { PGlite } = await import("@electric-sql/pglite");
  return PGlite.create(dir, {
    startParams: [...PGlite.defaultStartParams, "-c", `shared_buffers=${PGLITE_SHARED_BUFFERS}`],
  });
}

/** Migrates the embedded database in DATA_DIR; it must not be open in another process. */
export async function migratePglite(dataDir: string, logger: Logger): Promise<string[]> {
  const db = await openPglite(dataDir);
  try {
    return await migrate(pgliteSession(db), logger);
  } finally {
    await db.close();
  }
}

export async function openDatabase(
  target: DatabaseTarget,
  options: { migrate: boolean; logger: Logger },
): Promise<Database> {
  if ("url" in target) {
    if (options.migrate) await migratePostgres(target.url, options.logger);
    const bounded = target.timeoutMs
      ? { query_timeout: target.timeoutMs, connectionTimeoutMillis: target.timeoutMs }
      : {};
    const prisma = prismaOnFirstUse(async () => {
      const { PrismaPg } = await import("@prisma/adapter-pg");
      return new PrismaPg({ connectionString: target.url, ...bounded });
    });
    // A statement past its time fails, and pg-pool drops its connection (the server may still be on it).
    const pool = new pg.Pool({
      connectionString: target.url,
      max: SQL_POOL_SIZE,
      idleTimeoutMillis: SQL_IDLE_MS,
      ...bounded,
    });
    // A connection the server drops (restart, admin shutdown) errors here; queries on it fail and retry.
    pool.on("error", () => undefined);
    const ping = async () => {
      await pool.query("SELECT 1");
    };
    try {
      await ping();
    } catch (error) {
      await pool.end();
      throw error;
    }
    return {
      backend: "postgresql",
      prisma: prisma.prisma,
      sql: async <T>(text: string, params: unknown[], name?: string) =>
        (await pool.query({ text, values: params, ...(name && { name }) })).rows as T[],
      ping,
      withSession: (work) => withPgSession(target.url, work),
      close: async () => {
        await prisma.close();
        await pool.end();
      },
    };
  }
  const pglite = await openPglite(target.dataDir);
  if (options.migrate) await migrate(pgliteSession(pglite), options.logger);
  const { preparedStatements } = await import("./pglite-prepared.ts");
  const prepared = preparedStatements(pglite);
  const prisma = prismaOnFirstUse(async () => {
    const { PrismaPGlite } = await import("pglite-prisma-adapter");
    return new PrismaPGlite(pglite);
  });
  return {
    backend: "pglite",
    prisma: prisma.prisma,
    sql: async <T>(text: string, params: unknown[], name?: string) =>
      name ? prepared<T>(name, text, params) : (await pglite.query<T>(text, params)).rows,
    ping: async () => {
      await pglite.query("SELECT 1");
    },
    // One connection in this process: sessions take turns (migrations and maintenance are short).
    withSession: (work) => work(pgliteSession(pglite)),
    close: async () => {
      await prisma.close();
      await pglite.close();
    },
  };
}
