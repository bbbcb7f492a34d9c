import { PGlite } from "@electric-sql/pglite";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { preparedStatements } from "../../src/store/pglite-prepared.ts";

describe("PGlite named statements", () => {
  let db: PGlite;
  let prepared: ReturnType<typeof preparedStatements>;
  const INSERT =
    "INSERT INTO t (n, note) VALUES ($1::int, $2::text) RETURNING n, note, (n * 0.5)::float8 AS half, now() AS at";

  beforeAll(async () => {
    db = await PGlite.create();
    await db.exec("CREATE TABLE t (n int PRIMARY KEY, note text)");
    prepared = preparedStatements(db);
  });
  afterAll(() => db?.close());

  it("returns the rows query returns, parsed the same way, every time", async () => {
    const first = await prepared<Record<string, unknown>>("insert_t", INSERT, [1, "one"]);
    const second = await prepared<Record<string, unknown>>("insert_t", INSERT, [2, null]);
    const viaQuery = (await db.query<Record<string, unknown>>(INSERT, [3, "three"])).rows;
    expect(first).toMatchObject([{ n: 1, note: "one", half: 0.5 }]);
    expect(second).toMatchObject([{ n: 2, note: null, half: 1 }]);
    expect(Object.keys(first[0] ?? {})).toEqual(Object.keys(viaQuery[0] ?? {}));
    expect(first[0]?.at).toBeInstanceOf(Date);
  });

  it("goes on working after an execution fails", async () => {
    await expect(prepared("insert_t", INSERT, [1, "again"])).rejects.toThrow(/duplicate key/);
    expect(await prepared("insert_t", INSERT, [4, "four"])).toMatchObject([{ n: 4 }]);
  });

  it("refuses a parameter it cannot send as text, naming its type, and runs nothing", async () => {
    await expect(prepared("insert_t", INSERT, [6, { note: "six" }])).rejects.toThrow(
      "a named PGlite statement takes strings and numbers, not object",
    );
    expect((await db.query("SELECT n FROM t WHERE n = 6")).rows).toEqual([]);
  });

  it("waits for another caller's transaction instead of running inside it", async () => {
    let release!: () => void;
    let begun!: () => void;
    const held = new Promise<void>((resolve) => (release = resolve));
    const open = new Promise<void>((resolve) => (begun = resolve));
    const transaction = db.transaction(async (tx) => {
      await tx.query("INSERT INTO t (n) VALUES (100)");
      begun();
      await held;
      await tx.rollback();
    });
    await open;
    const insert = prepared("insert_t", INSERT, [5, "five"]);
    setTimeout(release, 50);
    await Promise.all([transaction, insert]);
    expect((await db.query("SELECT n FROM t WHERE n IN (5, 100)")).rows).toEqual([{ n: 5 }]);
  });
});
