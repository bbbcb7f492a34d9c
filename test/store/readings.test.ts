import { randomUUID } from "node:crypto";
import { cp, mkdir, readdir } from "node:fs/promises";
import path from "node:path";
import pino from "pino";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { z } from "zod";
import type { latestRow } from "../../src/api/schemas.ts";
import type { PrismaClient } from "../../src/generated/prisma/client.ts";
import { METRIC_NAME_PATTERN } from "../../src/ingest/payload.ts";
import type { MetricSubmission } from "../../src/ingest/submission.ts";
import type { Database } from "../../src/store/database.ts";
import { MIGRATIONS_DIR, migrate } from "../../src/store/migrate.ts";
import { partitionsOf as boundsOf, maintainPartitions } from "../../src/store/partitions.ts";
import { ReadingStore } from "../../src/store/readings.ts";
import { DAILY_PARTITIONS, openTestDatabase } from "../helpers/databases.ts";
import { distributedUnavailable, tempDir, uniqueId } from "../helpers/services.ts";

const skipPostgres = Boolean(await distributedUnavailable());
const logger = pino({ level: "silent" });
const HOUR = 3_600_000;
const DAY = 24 * HOUR;
const settings = DAILY_PARTITIONS;

function submission(tenantId: string, metrics: MetricSubmission["metrics"], receivedAt = Date.now()): MetricSubmission {
  return { id: randomUUID(), tenantId, agentId: "dev-1", source: "http", receivedAt, metrics };
}

type LatestValue = z.infer<typeof latestRow>;

/** A page of latest values, read back from the JSON the store returns. */
async function latestOf(store: ReadingStore, ...page: Parameters<ReadingStore["latest"]>): Promise<LatestValue[]> {
  return JSON.parse((await store.latest(...page)).itemsJson) as LatestValue[];
}

const partitionsOf = async (db: Database, table: string) =>
  (
    await (
      await db.prisma()
    ).$queryRawUnsafe<{ name: string }[]>(
      "SELECT c.relname AS name FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid WHERE i.inhparent = $1::regclass ORDER BY 1",
      table,
    )
  ).map((row) => row.name);

for (const kind of ["PGlite", "PostgreSQL"] as const) {
  describe.skipIf(kind === "PostgreSQL" && skipPostgres)(`metric store (${kind})`, () => {
    let db: Database;
    let prisma: PrismaClient;
    let remove: () => Promise<void>;
    let store: ReadingStore;
    let tenantId: string;
    const count = (where: { name?: string; dedupeId?: string } = {}) =>
      prisma.metric.count({ where: { tenantId, ...where } });

    beforeAll(async () => {
      ({ db, remove } = await openTestDatabase(kind));
      prisma = await db.prisma();
      await db.withSession((session) => maintainPartitions(session, settings, logger));
      store = new ReadingStore(db.sql, settings.dedupeWindowHours * HOUR);
      tenantId = (await prisma.tenant.create({ data: { name: "t" } })).id;
    });
    afterAll(() => remove?.());

    it("applies a replayed submission once, rows without dedupe_id included", async () => {
      const job = submission(tenantId, [
        { name: "replayed", value: 1, ts: Date.now() },
        { name: "replayed", value: 2, ts: Date.now(), dedupeId: `d-${uniqueId()}` },
      ]);
      expect(await store.store(job)).toHaveLength(2);
      expect(await store.store(job)).toEqual([]);
      expect(await count({ name: "replayed" })).toBe(2);
    });

    it("stores several submissions of a tenant in one statement: each claimed once, a replayed one left out, each with its arrival", async () => {
      const now = Date.now();
      const dedupeId = `d-${uniqueId()}`;
      const replayed = submission(tenantId, [{ name: "grouped", value: 0, ts: now }], now - 5000);
      await store.store(replayed);
      const first = submission(tenantId, [{ name: "grouped", value: 1, ts: now, dedupeId }], now - 2000);
      const second = {
        ...submission(tenantId, [{ name: "grouped", value: 2, ts: now + 1, dedupeId }], now - 1000),
        agentId: "dev-2",
      };
      const third = submission(tenantId, [{ name: "grouped", value: 3, ts: now + 2 }], now);
      const stored = await store.store(replayed, first, second, third);
      // The replay adds nothing; the dedupe_id sent twice is stored once, the first time it comes.
      expect(stored.map((m) => [m.agentId, m.value])).toEqual([
        ["dev-1", 1],
        ["dev-1", 3],
      ]);
      const rows = await prisma.metric.findMany({ where: { tenantId, name: "grouped" }, orderBy: { value: "asc" } });
      expect(rows.map((row) => [row.value, row.receivedAt.getTime()])).toEqual([
        [0, now - 5000],
        [1, now - 2000],
        [3, now],
      ]);
      expect(await prisma.ingestSubmission.count({ where: { id: { in: [first.id, second.id, third.id] } } })).toBe(3);
      // Stored again, together, they are all replays.
      expect(await store.store(first, second, third)).toEqual([]);
    });

    it("stores several tenants' submissions in one statement, each dedupe_id within its own tenant", async () => {
      const other = (await prisma.tenant.create({ data: { name: "other" } })).id;
      const dedupeId = `d-${uniqueId()}`;
      const now = Date.now();
      const stored = await store.store(
        submission(tenantId, [{ name: "shared-statement", value: 1, ts: now, dedupeId }]),
        submission(other, [{ name: "shared-statement", value: 2, ts: now, dedupeId }]),
        submission(other, [{ name: "shared-statement", value: 3, ts: now + 1, dedupeId }]),
      );
      expect(stored.map((m) => [m.tenantId, m.value])).toEqual([
        [tenantId, 1],
        [other, 2],
      ]);
      const latest = await prisma.metricLatest.findMany({
        where: { name: "shared-statement" },
        orderBy: { value: "asc" },
      });
      expect(latest.map((row) => [row.tenantId, row.value])).toEqual([
        [tenantId, 1],
        [other, 2],
      ]);
    });

    it("writes nothing of a submission that fails part-way", async () => {
      // The name bypasses the parser to reach the database's own check, as a corrupt job would.
      const job = submission(tenantId, [
        { name: "fine", value: 1, ts: Date.now() },
        { name: "not a valid name", value: 2, ts: Date.now() },
      ]);
      await expect(store.store(job)).rejects.toThrow(/metrics_name_check/);
      expect(await count({ name: "fine" })).toBe(0);
      expect(await prisma.ingestSubmission.count({ where: { id: job.id } })).toBe(0);
    });

    it("refuses in the database exactly the names the parser refuses", async () => {
      const names = ["a", "x".repeat(128), "ok_.:-9Z", "x".repeat(129), "", "load avg", "température", "a/b"];
      for (const name of names) {
        const stored = store.storeQuietly(submission(tenantId, [{ name, value: 1, ts: Date.now() }]));
        if (METRIC_NAME_PATTERN.test(name)) await expect(stored).resolves.toBeUndefined();
        else await expect(stored).rejects.toThrow(/metrics_name_check/);
      }
      expect(names.filter((name) => METRIC_NAME_PATTERN.test(name))).toHaveLength(3);
    });

    it("stores each reading under its own agent, and quietly exactly as with read-back", async () => {
      const stored = await store.store(
        submission(tenantId, [
          { name: "mixed", value: 1, ts: Date.now() },
          { name: "mixed", value: 2, ts: Date.now(), agentId: "dev-2" },
        ]),
      );
      expect(stored.map((m) => [m.agentId, m.value])).toEqual([
        ["dev-1", 1],
        ["dev-2", 2],
      ]);
      const quiet = submission(tenantId, [{ name: "quiet", value: 1, ts: Date.now() }]);
      await store.storeQuietly(quiet);
      await store.storeQuietly(quiet);
      expect(await count({ name: "quiet" })).toBe(1);
    });

    it("stores a dedupe_id once within the window, within a submission and across, and again after it", async () => {
      const dedupeId = `d-${uniqueId()}`;
      const now = Date.now();
      const reading = (value: number) => ({ name: "deduped", value, ts: now, dedupeId });
      const first = await store.store(submission(tenantId, [reading(1), reading(2)], now - 30 * HOUR));
      expect(first.map((m) => m.value)).toEqual([1]);
      expect(await store.store(submission(tenantId, [reading(3)], now - 7 * HOUR))).toEqual([]);
      // 29 hours after the first, past the 24-hour window: stored again, and deduped from there.
      expect((await store.store(submission(tenantId, [reading(4)], now - HOUR))).map((m) => m.value)).toEqual([4]);
      expect(await store.store(submission(tenantId, [reading(5)], now))).toEqual([]);
      expect(await count({ dedupeId })).toBe(2);
    });

    it("stores a dedupe_id once across a partition boundary, whichever side is stored first", async () => {
      const midnight = Math.floor(Date.now() / DAY) * DAY;
      for (const [first, second] of [
        [midnight - 1, midnight + 1],
        [midnight + 1, midnight - 1],
      ] as const) {
        const dedupeId = `d-${uniqueId()}`;
        const reading = (value: number) => ({ name: "crossing", value, ts: midnight, dedupeId });
        expect(await store.store(submission(tenantId, [reading(1)], first))).toHaveLength(1);
        expect(await store.store(submission(tenantId, [reading(2)], second))).toEqual([]);
        expect(await count({ dedupeId })).toBe(1);
      }
    });

    it("looks for a dedupe_id's claims up to ten minutes past the arrival or the present, not beyond", async () => {
      const nextMidnight = Math.ceil(Date.now() / DAY) * DAY;
      const arrived = nextMidnight - 60_000;
      const near = `d-${uniqueId()}`;
      const far = `d-${uniqueId()}`;
      // Claims in the next partition, as stamped by a broker whose clock runs ahead.
      for (const [dedupeId, seenAt] of [
        [near, nextMidnight + 5 * 60_000],
        [far, nextMidnight + 20 * 60_000],
      ] as const) {
        await db.sql(
          "INSERT INTO metric_dedupe (tenant_id, dedupe_id, seen_at) VALUES ($1, $2, to_timestamp($3::float8 / 1000))",
          [tenantId, dedupeId, seenAt],
        );
      }
      const reading = (dedupeId: string) => ({ name: "ahead", value: 1, ts: Date.now(), dedupeId });
      expect(await store.store(submission(tenantId, [reading(near)], arrived))).toEqual([]);
      expect(await store.store(submission(tenantId, [reading(far)], arrived))).toHaveLength(1);
    });

    // A job that waited in the queue (a long database outage) until the partitions of its arrival
    // were dropped: no claim can go there, and failing would fail it on every attempt.
    it("stores a submission that outlived its dedupe partitions, still deduped against the claims left", async () => {
      const dedupedLater = `d-${uniqueId()}`;
      const twice = `d-${uniqueId()}`;
      const oldest = Math.min(...(await boundsOf(db.sql, "metric_dedupe")).map((p) => p.from));
      const arrived = oldest - HOUR;
      const reading = (value: number, dedupeId: string) => ({ name: "outlived", value, ts: arrived, dedupeId });
      // Its resend arrived later and was stored first.
      expect(await store.store(submission(tenantId, [reading(1, dedupedLater)]))).toHaveLength(1);
      const late = submission(tenantId, [reading(2, dedupedLater), reading(3, twice), reading(4, twice)], arrived);
      expect((await store.store(late)).map((m) => m.value)).toEqual([3]);
      // Its submission partition is still there: a replay is still applied once.
      expect(await store.store(late)).toEqual([]);
      expect(await count({ name: "outlived" })).toBe(2);
    });

    it("stores a submission that outlived its submission partitions too", async () => {
      const oldest = Math.min(...(await boundsOf(db.sql, "ingest_submissions")).map((p) => p.from));
      const arrived = oldest - HOUR;
      const late = submission(
        tenantId,
        [{ name: "outlived_more", value: 1, ts: arrived, dedupeId: `d-${uniqueId()}` }],
        arrived,
      );
      expect(await store.store(late)).toHaveLength(1);
      expect(await count({ name: "outlived_more" })).toBe(1);
    });

    it("stores and finds readings on both sides of a partition boundary", async () => {
      const midnight = Math.floor(Date.now() / DAY) * DAY;
      await store.store(
        submission(tenantId, [
          { name: "boundary", value: 1, ts: midnight - 1 },
          { name: "boundary", value: 2, ts: midnight },
          { name: "boundary", value: 3, ts: midnight + 1 },
        ]),
      );
      const all = await store.query({ tenantId, name: "boundary", from: midnight - DAY, to: midnight + DAY }, 10);
      expect(all.map((row) => row.value)).toEqual([3, 2, 1]);
      const after = await store.query({ tenantId, name: "boundary", from: midnight }, 10);
      expect(after.map((row) => row.value)).toEqual([3, 2]);
      const page = await store.query({ tenantId, name: "boundary" }, 10, {
        ts: all[1]?.ts as string,
        id: all[1]?.id as string,
      });
      expect(page.map((row) => row.value)).toEqual([1]);
    });

    it("aggregates a series in time buckets as computed by hand, and keeps the latest value of each series", async () => {
      const start = Date.parse("2026-11-20T10:00:00Z");
      const minute = 60_000;
      const readings = [
        { at: 5_000, value: 1 },
        { at: 20_000, value: 5 },
        { at: 59_999, value: 3 },
        { at: minute + 1_000, value: 10 },
        { at: 3 * minute, value: -2 },
        { at: 3 * minute + 30_000, value: 4 },
      ];
      await store.store(
        submission(
          tenantId,
          readings.map(({ at, value }) => ({ name: "series", value, ts: start + at })),
        ),
      );
      const series = await store.series(
        { tenantId, agentId: "dev-1", name: "series", from: start, to: start + 4 * minute },
        minute,
        ["avg", "min", "max", "sum", "count", "last"],
      );
      expect(series).toEqual([
        { start: "2026-11-20T10:00:00.000Z", avg: 3, min: 1, max: 5, sum: 9, count: 3, last: 3 },
        { start: "2026-11-20T10:01:00.000Z", avg: 10, min: 10, max: 10, sum: 10, count: 1, last: 10 },
        { start: "2026-11-20T10:03:00.000Z", avg: 1, min: -2, max: 4, sum: 2, count: 2, last: 4 },
      ]);
      const [latest] = await latestOf(store, { tenantId, agentId: "dev-1" }, 1, { agentId: "dev-1", name: "seriea" });
      expect(latest).toMatchObject({ agent_id: "dev-1", name: "series", value: 4, ts: "2026-11-20T10:03:30.000Z" });

      // A reading older than the latest one, sent later, does not replace its value.
      await store.store(submission(tenantId, [{ name: "series", value: 99, ts: start }]));
      const [still] = await latestOf(store, { tenantId, agentId: "dev-1" }, 1, { agentId: "dev-1", name: "seriea" });
      expect(still?.value).toBe(4);
      expect(Date.parse(still?.received_at as string)).toBeGreaterThan(Date.now() - 60_000);
    });

    it("writes latest values as JSON that reads back exactly: awkward numbers, escaped tags, pages", async () => {
      const now = Date.now();
      const values = [1e-7, 1e21, -0.5, 123456789.123, Number.MIN_VALUE, -1.5e-300];
      const tags = { quote: 'say "hi"', backslash: "a\\b", unicode: "ünï ✓ 😀", newline: "a\nb" };
      await store.store(
        submission(
          tenantId,
          values.map((value, i) => ({
            agentId: "dev-json",
            name: `json${i}`,
            value,
            ts: now,
            ...(i === 0 && { tags }),
          })),
        ),
      );
      const page = await store.latest({ tenantId, agentId: "dev-json" }, 3);
      const first = JSON.parse(page.itemsJson) as LatestValue[];
      expect(first.map((row) => [row.name, row.value])).toEqual([
        ["json0", 1e-7],
        ["json1", 1e21],
        ["json2", -0.5],
      ]);
      expect(first[0]).toEqual({
        agent_id: "dev-json",
        name: "json0",
        value: 1e-7,
        ts: new Date(now).toISOString(),
        tags,
        received_at: expect.stringMatching(/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/),
      });
      expect(page.next).toEqual({ agentId: "dev-json", name: "json2" });
      const rest = await store.latest({ tenantId, agentId: "dev-json" }, 3, page.next);
      expect((JSON.parse(rest.itemsJson) as LatestValue[]).map((row) => row.value)).toEqual([
        123456789.123, 5e-324, -1.5e-300,
      ]);
      expect(rest.next).toBeUndefined();

      // Whatever text a row holds stays JSON: quotes and backslashes in the agent and the name.
      await db.sql(
        `INSERT INTO metric_latest (tenant_id, agent_id, name, value, ts, received_at)
         VALUES ($1::uuid, $2, $3, 1, now(), now())`,
        [tenantId, 'odd"agent\\', 'odd\\"name'],
      );
      const odd = JSON.parse((await store.latest({ tenantId, agentId: 'odd"agent\\' }, 10)).itemsJson) as LatestValue[];
      expect(odd.map((row) => [row.agent_id, row.name])).toEqual([['odd"agent\\', 'odd\\"name']]);
    });

    it("shows one tenant's readings, series and latest values to that tenant only", async () => {
      const other = (await prisma.tenant.create({ data: { name: "other" } })).id;
      await store.store(submission(other, [{ name: "private", value: 7, ts: Date.now() }]));
      expect(await store.query({ tenantId, name: "private" }, 10)).toEqual([]);
      expect(
        await store.series({ tenantId, name: "private", from: Date.now() - HOUR, to: Date.now() + HOUR }, HOUR, [
          "count",
        ]),
      ).toEqual([]);
      expect((await latestOf(store, { tenantId }, 1000)).filter((row) => row.name === "private")).toEqual([]);
      expect((await latestOf(store, { tenantId: other }, 10)).map((row) => row.value)).toEqual([7]);
    });

    it("drops whole partitions past the retention and nothing newer", async () => {
      const now = Date.now();
      // 35½ days ago the maintenance made the partitions of then; a reading of 35 days ago lives there.
      await db.withSession((session) => maintainPartitions(session, settings, logger, now - 35.5 * DAY));
      await store.store(
        submission(tenantId, [
          { name: "retained", value: 35, ts: now - 35 * DAY },
          { name: "retained", value: 29, ts: now - 29 * DAY },
          { name: "retained", value: 0, ts: now },
        ]),
      );
      const before = await partitionsOf(db, "metrics");
      const result = await db.withSession((session) => maintainPartitions(session, settings, logger, now));
      const after = await partitionsOf(db, "metrics");
      expect(result?.dropped.length).toBeGreaterThan(5);
      expect(after).toEqual(before.filter((name) => !result?.dropped.includes(name)));
      const kept = await store.query({ tenantId, name: "retained" }, 10);
      expect(kept.map((row) => row.value)).toEqual([0, 29]);
      // Every partition kept reaches into the retention (plus one partition of grace).
      const oldest = after[0] as string;
      expect(
        Date.parse(`${oldest.slice(9, 13)}-${oldest.slice(13, 15)}-${oldest.slice(15, 17)}T00:00:00Z`),
      ).toBeGreaterThan(now - 32 * DAY);
    });
  });

  describe.skipIf(kind === "PostgreSQL" && skipPostgres)(
    `migrating a populated database to partitions (${kind})`,
    () => {
      it("keeps every row, its id, its dedupe and the latest values, and goes on from there", async () => {
        const { db, remove } = await openTestDatabase(kind, false);
        const prisma = await db.prisma();
        try {
          // The migrations as they were before partitioning, then rows the old way.
          const all = (await readdir(MIGRATIONS_DIR, { withFileTypes: true }))
            .filter((e) => e.isDirectory())
            .map((e) => e.name)
            .sort();
          const partitioning = all.indexOf("20261127010000_partitioned_metrics");
          const before = await tempDir();
          for (const name of all.slice(0, partitioning)) {
            await mkdir(path.join(before.dir, name));
            await cp(path.join(MIGRATIONS_DIR, name, "migration.sql"), path.join(before.dir, name, "migration.sql"));
          }
          await db.withSession((session) => migrate(session, logger, before.dir));
          await before.remove();
          const tenantId = (await prisma.tenant.create({ data: { name: "old" } })).id;
          const now = Date.now();
          const rows = Array.from({ length: 300 }, (_, i) => ({
            agent: `dev-${i % 3}`,
            name: `m${i % 5}`,
            value: i,
            ts: new Date(now - (300 - i) * 10 * 60_000).toISOString(),
            dedupe: i % 2 === 0 ? `old-${i}` : null,
          }));
          await prisma.$executeRawUnsafe(
            `INSERT INTO metrics (tenant_id, agent_id, name, value, ts, dedupe_id, received_at)
           SELECT $1::uuid, r.agent, r.name, r.value, r.ts::timestamptz, r.dedupe, r.ts::timestamptz
           FROM jsonb_to_recordset($2::jsonb) AS r(agent text, name text, value float8, ts text, dedupe text)`,
            tenantId,
            JSON.stringify(rows),
          );
          await prisma.$executeRawUnsafe(
            "INSERT INTO ingest_submissions (id, tenant_id, received_at) VALUES ($1::uuid, $2::uuid, now())",
            randomUUID(),
            tenantId,
          );
          const oldRows = await prisma.$queryRawUnsafe<{ id: string; value: number }[]>(
            "SELECT id::text AS id, value FROM metrics ORDER BY id",
          );

          await db.withSession((session) => migrate(session, logger));
          await db.withSession((session) => maintainPartitions(session, settings, logger));

          const newRows = await prisma.$queryRawUnsafe<{ id: string; value: number }[]>(
            "SELECT id::text AS id, value FROM metrics ORDER BY id",
          );
          expect(newRows).toEqual(oldRows);
          expect(await partitionsOf(db, "metrics")).not.toContain("metrics");
          expect(await prisma.ingestSubmission.count()).toBe(1);
          const store = new ReadingStore(db.sql, DAY);
          const latest = await latestOf(store, { tenantId }, 100);
          expect(latest).toHaveLength(15);
          expect(latest.find((row) => row.agent_id === "dev-2" && row.name === "m4")?.value).toBe(299);
          // A reading of the last day is still deduped; new ones get ids after the old ones.
          const again = await store.store(
            submission(tenantId, [{ name: "m0", value: -1, ts: now, dedupeId: "old-298" }]),
          );
          expect(again).toEqual([]);
          const fresh = await store.store(submission(tenantId, [{ name: "m0", value: 1, ts: now, dedupeId: "new-1" }]));
          expect(BigInt(fresh[0]?.id as string)).toBeGreaterThan(BigInt(oldRows.at(-1)?.id as string));
        } finally {
          await remove();
        }
      });
    },
  );
}
