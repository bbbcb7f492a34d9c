import pino from "pino";
import { type Database, openDatabase } from "../../src/store/database.ts";
import type { RetentionSettings } from "../../src/store/partitions.ts";
import { createTestDatabase, tempDir } from "./services.ts";

const HOUR = 3_600_000;

/** The defaults: daily partitions, a day's dedupe window. */
export const DAILY_PARTITIONS: RetentionSettings = {
  partitionHours: 24,
  metricsRetentionDays: 30,
  futureSkewMs: 24 * HOUR,
  dedupeWindowHours: 24,
  submissionRetentionHours: 168,
};

/** A database of each kind the service runs on, of the test's own (migrated unless asked not to), removed by `remove()`. */
export async function openTestDatabase(
  kind: "PGlite" | "PostgreSQL",
  migrate = true,
): Promise<{ db: Database; remove(): Promise<void> }> {
  const own = kind === "PGlite" ? await tempDir() : await createTestDatabase();
  const target = "dir" in own ? { dataDir: own.dir } : { url: own.url };
  const db = await openDatabase(target, { migrate, logger: pino({ level: "silent" }) });
  return {
    db,
    remove: async () => {
      await db.close();
      await ("dir" in own ? own.remove() : own.drop());
    },
  };
}
