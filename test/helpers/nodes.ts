import type { MqttClient } from "mqtt";
import pino from "pino";
import { afterEach } from "vitest";
import { type RunningApp, startApp } from "../../src/app.ts";
import { loadConfig } from "../../src/config.ts";
import { createTestDatabase, deleteRedisPrefix, OWN_PORTS, REDIS_URL, uniqueId } from "./services.ts";

/** A pino logger for a test app: silent unless TEST_LOG_LEVEL says otherwise, or into `lines` when given. */
export function testLogger(level: string, lines?: string[]) {
  return lines ? pino({ level: "info" }, { write: (line: string) => lines.push(line) }) : pino({ level });
}

/** Closes an app, failing with what it still waits for rather than hanging the test run. */
export async function closeWithin(app: RunningApp, ms: number): Promise<void> {
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`app.close() still waits for ${app.closingStep()} after ${ms} ms`)), ms);
  });
  try {
    await Promise.race([app.close(), late]);
  } finally {
    clearTimeout(timer);
  }
}

/**
 * Processes of one distributed deployment in the test process, on backends of the test's own;
 * everything started or tracked is stopped and removed after each test. Call at the top of a file.
 */
export function distributedNodes(adminToken: string) {
  const cleanups: (() => Promise<unknown>)[] = [];
  afterEach(async () => {
    while (cleanups.length) await cleanups.pop()?.();
  });

  /** A node of every role (or `ROLES`); `logLines` collects what it logs. */
  async function startNode(env: Record<string, string>, logLines?: string[]): Promise<RunningApp> {
    const app = await startApp(
      loadConfig({
        ...OWN_PORTS,
        ADMIN_TOKEN: adminToken,
        LOG_LEVEL: "silent",
        REDIS_PERSISTENCE: "none",
        ...env,
      }),
      testLogger("silent", logLines),
    );
    cleanups.push(() => closeWithin(app, 30_000));
    return app;
  }

  /** The environment of nodes sharing one database and one Redis prefix, both of the test's own. */
  async function sharedBackends(): Promise<Record<string, string>> {
    const db = await createTestDatabase();
    cleanups.push(db.drop);
    const prefix = `edge-ingest-test-${uniqueId()}`;
    cleanups.push(() => deleteRedisPrefix(prefix));
    return { DATABASE_URL: db.url, REDIS_URL, REDIS_PREFIX: prefix };
  }

  return {
    cleanups,
    startNode,
    sharedBackends,
    /** Two nodes on shared backends: every role, and a second broker. */
    startPair: async (): Promise<[RunningApp, RunningApp]> => {
      const shared = await sharedBackends();
      return [await startNode(shared), await startNode({ ...shared, ROLES: "broker" })];
    },
    /** Ends the client after the test. */
    track: (client: MqttClient): MqttClient => {
      cleanups.push(() => client.endAsync(true));
      return client;
    },
  };
}
