import pino from "pino";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { Database } from "../../src/store/database.ts";
import { maintainPartitions, PartitionBounds } from "../../src/store/partitions.ts";
import { DAILY_PARTITIONS, openTestDatabase } from "../helpers/databases.ts";
import { distributedUnavailable } from "../helpers/services.ts";

const skipPostgres = Boolean(await distributedUnavailable());
const logger = pino({ level: "silent" });
const DAY = 86_400_000;

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

    it("reads the catalog again for a time outside every partition it knows", async () => {
      const bounds = new PartitionBounds(db.sql, "metric_dedupe", 60_000);
      const later = now + 20 * DAY;
      expect(await bounds.holding(later, now)).toBeUndefined();
      await maintain(later);
      const day = Math.floor(later / DAY) * DAY;
      expect(await bounds.holding(later, now)).toMatchObject({ from: day, to: day + DAY });
    });
  });
}
