import pg from "pg";
import { describe, expect, it } from "vitest";
import { isTransientDatabaseError } from "../../src/store/database-errors.ts";
import { freePort } from "../helpers/redis-server.ts";
import { createTestDatabase, distributedUnavailable } from "../helpers/services.ts";

const skip = Boolean(await distributedUnavailable());

describe.skipIf(skip)("isTransientDatabaseError, on errors PostgreSQL and its driver really give", () => {
  it("calls a refused connection and a connection the server ends transient", async () => {
    const refused = new pg.Pool({ connectionString: `postgresql://postgres@127.0.0.1:${await freePort()}/x` });
    const error = await refused.query("SELECT 1").catch((e: unknown) => e);
    await refused.end();
    expect(isTransientDatabaseError(error)).toBe(true);

    const test = await createTestDatabase();
    const client = new pg.Client({ connectionString: test.url });
    client.on("error", () => undefined);
    await client.connect();
    try {
      const { rows } = await client.query("SELECT pg_backend_pid() AS pid");
      const admin = new pg.Client({ connectionString: test.url });
      await admin.connect();
      await admin.query("SELECT pg_terminate_backend($1)", [rows[0].pid]);
      await admin.end();
      const terminated = await client.query("SELECT 1").catch((e: unknown) => e);
      expect(isTransientDatabaseError(terminated)).toBe(true);
    } finally {
      await client.end().catch(() => undefined);
      await test.drop();
    }
  });

  it("calls a statement the database refuses permanent", async () => {
    const test = await createTestDatabase();
    const pool = new pg.Pool({ connectionString: test.url });
    try {
      for (const [statement, params] of [
        ["SELECT 1/0", []],
        ["SELECT $1::text", ["a\u0000"]],
        ["SELECT * FROM no_such_table", []],
      ] as const) {
        const error = await pool.query(statement, [...params]).catch((e: unknown) => e);
        expect(isTransientDatabaseError(error), statement).toBe(false);
      }
    } finally {
      await pool.end();
      await test.drop();
    }
  });
});
