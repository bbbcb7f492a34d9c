import pino from "pino";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { Database, Sql } from "../../src/store/database.ts";
import { maintainPartitions, PartitionBounds, partitionName } from "../../src/store/partitions.ts";
import { DAILY_PARTITIONS, openTestDatabase } from "../helpers/databases.ts";
import { distributedUnavailable } from "../helpers/services.ts";

const skipPostgres = Boolean(await distributedUnavailable());
const logger = pino({ level: "silent" });
const HOUR = 3_600_000;
const DAY = 24 * HOUR;

for (const kind of ["PGlite", "PostgreSQL"] as const) {
  describe.skipIf(kind === "PostgreSQL" && skipPostgres)(`partition bounds (${kind})`, () => {
    let db: Database;
    let remove: () => Promise<void>;
    const now = Date.now();
    const midnight = Math.floor(now / DAY) * DAY;
    const maintain = (at: number) =>
      db.withSession((session) => maintainPartitions(session, DAILY_PARTITIONS, logger, at));

    beforeAll(async () => {
      ({ db, remove } = await openTestDatabase(kind));
      await maintain(now);
    });
    afterAll(() => remove?.());

    it("names the partition holding a time, and none where there is none", async () => {
      const bounds = new PartitionBounds(db.sql, "metric_dedupe", 60_000);
      expect(await bounds.holding(now)).toMatchObject({ from: midnight, to: midnight + DAY });
      expect(await bounds.holding(midnight - 1)).toMatchObject({ from: midnight - DAY, to: midnight });
      expect(await bounds.holding(now + 30 * DAY)).toBeUndefined();
    });

    it("tells a time older than every partition (its own dropped) from one not yet covered", async () => {
      let reads = 0;
      const counted: Sql = (text, params, name) => {
        reads++;
        return db.sql(text, params, name);
      };
      const bounds = new PartitionBounds(counted, "metric_dedupe", 60_000);
      expect(bounds.isBeforeAll(0)).toBe(false); // nothing read yet
      expect(await bounds.holding(now - 30 * DAY, now)).toBeUndefined();
      expect(bounds.isBeforeAll(now - 30 * DAY)).toBe(true);
      expect(bounds.isBeforeAll(now + 30 * DAY)).toBe(false);
      expect(bounds.isBeforeAll(now)).toBe(false);
      // Dropped partitions are not made again: another time before them all is answered as read.
      expect(await bounds.holding(now - 20 * DAY, now)).toBeUndefined();
      expect(reads).toBe(1);
      // A time after them all may have a partition made since: the catalog is read again.
      expect(await bounds.holding(now + 30 * DAY, now)).toBeUndefined();
      expect(reads).toBe(2);
    });

    it("reads the catalog again for a time outside every partition it knows", async () => {
      const bounds = new PartitionBounds(db.sql, "metric_dedupe", 60_000);
      const later = now + 20 * DAY;
      expect(await bounds.holding(later, now)).toBeUndefined();
      await maintain(later);
      const day = Math.floor(later / DAY) * DAY;
      expect(await bounds.holding(later, now)).toMatchObject({ from: day, to: day + DAY });
    });

    it("reads the catalog again once its bounds are older than the time they are kept", async () => {
      await maintain(now); // the partitions of now again, whatever an earlier test dropped
      const ttlMs = 60_000;
      const bounds = new PartitionBounds(db.sql, "metric_dedupe", ttlMs);
      const tomorrow = midnight + DAY;
      const at = tomorrow + HOUR;
      expect(await bounds.holding(at, now)).toMatchObject({ from: tomorrow, to: tomorrow + DAY });
      // Tomorrow's partition remade at another interval: two halves of a day.
      const half = (from: number) =>
        `CREATE TABLE "${partitionName("metric_dedupe", from)}" PARTITION OF metric_dedupe ` +
        `FOR VALUES FROM ('${new Date(from).toISOString()}') TO ('${new Date(from + DAY / 2).toISOString()}')`;
      await db.withSession(async (session) => {
        await session.exec(`DROP TABLE "${partitionName("metric_dedupe", tomorrow)}"`);
        await session.exec(`${half(tomorrow)}; ${half(tomorrow + DAY / 2)}`);
      });
      expect(await bounds.holding(at, now + ttlMs - 1)).toMatchObject({ from: tomorrow, to: tomorrow + DAY });
      expect(await bounds.holding(at, now + ttlMs)).toMatchObject({ from: tomorrow, to: tomorrow + DAY / 2 });
    });
  });
}
