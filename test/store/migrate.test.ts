import { createHash } from "node:crypto";
import { cp, readdir, readFile, writeFile } from "node:fs/promises";
import path from "node:path";
import { PGlite } from "@electric-sql/pglite";
import pg from "pg";
import pino from "pino";
import { afterEach, describe, expect, it } from "vitest";
import { migratePostgres } from "../../src/store/database.ts";
import { MIGRATIONS_DIR, MigrationError, migrate, type SqlSession } from "../../src/store/migrate.ts";
import { createTestDatabase, distributedUnavailable, tempDir } from "../helpers/services.ts";

const skipPostgres = await distributedUnavailable();
const INIT = "20261126000000_init";
/** Every migration the repository holds, in the order they apply. */
const ALL = (await readdir(MIGRATIONS_DIR, { withFileTypes: true }))
  .filter((entry) => entry.isDirectory())
  .map((entry) => entry.name)
  .sort();

function recordingLogger() {
  const lines: { msg: string; migration?: string }[] = [];
  const logger = pino({ level: "info" }, { write: (line: string) => lines.push(JSON.parse(line)) });
  return { logger, lines };
}

function pgliteSession(db: PGlite): SqlSession {
  return {
    query: async (sql, params) => (await db.query<never>(sql, params)).rows,
    exec: async (sql) => {
      await db.exec(sql);
    },
  };
}

const cleanups: (() => Promise<void>)[] = [];
afterEach(async () => {
  while (cleanups.length) await cleanups.pop()?.();
});

async function copyOfMigrations(): Promise<string> {
  const tmp = await tempDir();
  cleanups.push(tmp.remove);
  await cp(MIGRATIONS_DIR, tmp.dir, { recursive: true });
  return tmp.dir;
}

describe("migrate (PGlite)", () => {
  async function freshDb() {
    const db = await PGlite.create();
    cleanups.push(() => db.close());
    return db;
  }

  it("applies pending migrations once, recorded as prisma migrate deploy records them", async () => {
    const db = await freshDb();
    const { logger } = recordingLogger();
    expect(await migrate(pgliteSession(db), logger)).toEqual(ALL);
    expect(await migrate(pgliteSession(db), logger)).toEqual([]);

    const { rows } = await db.query<{ migration_name: string; checksum: string; applied_steps_count: number }>(
      `SELECT migration_name, checksum, applied_steps_count, finished_at FROM "_prisma_migrations"`,
    );
    const bytes = await readFile(path.join(MIGRATIONS_DIR, INIT, "migration.sql"));
    expect(rows.map((row) => row.migration_name)).toEqual(ALL);
    expect(rows[0]).toEqual(
      expect.objectContaining({
        migration_name: INIT,
        checksum: createHash("sha256").update(bytes).digest("hex"),
        applied_steps_count: 1,
        finished_at: expect.any(Date),
      }),
    );
    // Tables, not their partitions (which the partitioned ones have from the start).
    const tables = await db.query<{ relname: string }>(
      `SELECT relname FROM pg_class
       WHERE relnamespace = 'public'::regnamespace AND relkind IN ('r', 'p') AND NOT relispartition
       ORDER BY relname`,
    );
    expect(tables.rows.map((r) => r.relname)).toEqual([
      "_prisma_migrations",
      "agent_activity",
      "agents",
      "credentials",
      "ingest_submissions",
      "metric_dedupe",
      "metric_latest",
      "metrics",
      "tenant_cas",
      "tenant_limits",
      "tenants",
    ]);
  });

  it("warns about an applied migration whose file was edited", async () => {
    const db = await freshDb();
    const dir = await copyOfMigrations();
    await migrate(pgliteSession(db), recordingLogger().logger, dir);
    await writeFile(path.join(dir, INIT, "migration.sql"), "-- edited\n", { flag: "a" });
    const { logger, lines } = recordingLogger();
    expect(await migrate(pgliteSession(db), logger, dir)).toEqual([]);
    expect(lines).toContainEqual(expect.objectContaining({ migration: INIT, msg: expect.stringMatching(/edited/) }));
  });

  it("rolls back a failed migration and refuses to go past it", async () => {
    const db = await freshDb();
    const dir = await copyOfMigrations();
    await migrate(pgliteSession(db), recordingLogger().logger, dir);
    const broken = path.join(dir, "20261127000000_broken");
    await cp(path.join(dir, INIT), broken, { recursive: true });
    await writeFile(
      path.join(broken, "migration.sql"),
      `CREATE TABLE half_done (id int); SELECT * FROM no_such_table;`,
    );
    await expect(migrate(pgliteSession(db), recordingLogger().logger, dir)).rejects.toThrow(
      /20261127000000_broken failed/,
    );
    const halfDone = await db.query("SELECT to_regclass('half_done') AS t");
    expect(halfDone.rows).toEqual([{ t: null }]);
    await expect(migrate(pgliteSession(db), recordingLogger().logger, dir)).rejects.toThrow(MigrationError);
    await expect(migrate(pgliteSession(db), recordingLogger().logger, dir)).rejects.toThrow(/failed earlier/);
  });
});

describe.skipIf(Boolean(skipPostgres))("migrate (PostgreSQL)", () => {
  it("applies once even when several processes start together", async () => {
    const db = await createTestDatabase();
    cleanups.push(db.drop);
    const { logger } = recordingLogger();
    const results = await Promise.all([1, 2, 3].map(() => migratePostgres(db.url, logger)));
    expect(results.flat()).toEqual(ALL);
    const client = new pg.Client({ connectionString: db.url });
    await client.connect();
    const { rows } = await client.query(`SELECT count(*)::int AS n FROM "_prisma_migrations"`);
    await client.end();
    expect(rows).toEqual([{ n: ALL.length }]);
  });
});
