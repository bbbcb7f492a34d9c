import { readFile } from "node:fs/promises";
import path from "node:path";
import { type RunningApp, startApp } from "../../src/app.ts";
import { loadConfig } from "../../src/config.ts";
import { closeWithin, testLogger } from "./nodes.ts";
import { createTestDatabase, deleteRedisPrefix, OWN_PORTS, REDIS_URL, tempDir, uniqueId } from "./services.ts";

export type Mode = "embedded" | "distributed";

export interface TestApp {
  app: RunningApp;
  url: string;
  adminToken: string;
  /** The test's own database (distributed) or data directory (embedded). */
  databaseUrl?: string;
  dataDir?: string;
  redisPrefix?: string;
  /** Stops the app and removes everything the test created. */
  cleanup(): Promise<void>;
}

/** Starts the real service on a free port with backends of the test's own; `logLines` collects what it logs. */
export async function startTestApp(
  mode: Mode,
  env: Record<string, string> = {},
  logLines?: string[],
): Promise<TestApp> {
  const base = {
    ...OWN_PORTS,
    LOG_LEVEL: process.env.TEST_LOG_LEVEL ?? "silent",
    ...env,
  };
  if (mode === "embedded") {
    const data = await tempDir();
    const app = await startApp(loadConfig({ ...base, DATA_DIR: data.dir }), testLogger(base.LOG_LEVEL, logLines));
    const adminToken = (await readFile(path.join(data.dir, "admin-token"), "utf8")).trim();
    return {
      app,
      url: app.httpUrl,
      adminToken,
      dataDir: data.dir,
      cleanup: async () => {
        await closeWithin(app, 30_000);
        await data.remove();
      },
    };
  }
  const db = await createTestDatabase();
  const redisPrefix = `edge-ingest-test-${uniqueId()}`;
  const adminToken = `admin-${uniqueId()}-${"x".repeat(32)}`;
  const config = loadConfig({
    ...base,
    DATABASE_URL: db.url,
    REDIS_URL,
    REDIS_PREFIX: redisPrefix,
    // The machine's Redis keeps nothing on disk; tests accept that (test/broker/redis-durability.test.ts checks the refusal).
    REDIS_PERSISTENCE: "none",
    ADMIN_TOKEN: adminToken,
  });
  const app = await startApp(config, testLogger(base.LOG_LEVEL, logLines));
  return {
    app,
    url: app.httpUrl,
    adminToken,
    databaseUrl: db.url,
    redisPrefix,
    cleanup: async () => {
      await closeWithin(app, 30_000);
      await db.drop();
      await deleteRedisPrefix(redisPrefix);
    },
  };
}
