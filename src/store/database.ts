import { mkdir } from "node:fs/promises";
import path from "node:path";
import { PGlite } from "@electric-sql/pglite";
import { PrismaPg } from "@prisma/adapter-pg";
import pg from "pg";
import { PrismaPGlite } from "pglite-prisma-adapter";
import type { Logger } from "pino";
import { PrismaClient } from "../generated/prisma/client.ts";
import { migrate, type SqlSession } from "./migrate.ts";

export interface Database {
  backend: "postgresql" | "pglite";
  prisma: PrismaClient;
  /** Throws unless the database answers. */
  ping(): Promise<void>;
  close(): Promise<void>;
}

const ping = (prisma: PrismaClient) => async () => {
  await prisma.$queryRawUnsafe("SELECT 1");
};

export type DatabaseTarget = { url: string } | { dataDir: string };

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

/** Runs pending migrations on a dedicated connection (the advisory lock is per session). */
export async function migratePostgres(url: string, logger: Logger): Promise<string[]> {
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  try {
    return await migrate(pgSession(client), logger);
  } finally {
    await client.end();
  }
}

async function openPglite(dataDir: string): Promise<PGlite> {
  const dir = path.join(dataDir, "pglite");
  await mkdir(dir, { recursive: true });
  return PGlite.create(dir);
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
    const prisma = new PrismaClient({ adapter: new PrismaPg({ connectionString: target.url }) });
    await prisma.$connect();
    return { backend: "postgresql", prisma, ping: ping(prisma), close: () => prisma.$disconnect() };
  }
  const pglite = await openPglite(target.dataDir);
  if (options.migrate) await migrate(pgliteSession(pglite), options.logger);
  const prisma = new PrismaClient({ adapter: new PrismaPGlite(pglite) });
  await prisma.$connect();
  return {
    backend: "pglite",
    prisma,
    ping: ping(prisma),
    close: async () => {
      await prisma.$disconnect();
      await pglite.close();
    },
  };
}
