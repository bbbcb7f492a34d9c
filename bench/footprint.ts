/**
 * Footprint (`npm run bench -- --only=footprint`): the resident memory of each role 20 s after it
 * started, with no client, and how long it took to start; the build (what ships) against the
 * sources run through tsx (what it replaced). Embedded mode twice: its first start, which creates
 * the database (PGlite's WebAssembly memory grows for it and never shrinks), and a restart on that
 * data directory, what a device runs from then on.
 */
import { randomBytes } from "node:crypto";
import { mkdtemp, rm } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { currentRssMiB, stop } from "./lib/processes.ts";
import { ADMIN_TOKEN, createDatabase, deleteRedisPrefix, REDIS_URL, serviceEnv, startService } from "./lib/targets.ts";

export interface FootprintResult {
  role: string;
  from: "build" | "sources";
  startSeconds: number;
  rssMiB: number;
}

const ROLES = ["embedded (first start)", "embedded (restart)", "broker", "worker", "api"] as const;

async function measure(
  role: (typeof ROLES)[number],
  from: FootprintResult["from"],
  settleMs: number,
): Promise<FootprintResult> {
  const removals: (() => Promise<unknown>)[] = [];
  try {
    let extra: Record<string, string>;
    if (role.startsWith("embedded")) {
      const dir = await mkdtemp(path.join(os.tmpdir(), "edge-ingest-footprint-"));
      removals.push(() => rm(dir, { recursive: true, force: true }));
      extra = { DATA_DIR: dir };
      if (role === "embedded (restart)") {
        const first = await startService(
          "footprint-embedded-first",
          await serviceEnv({ ...extra, MQTT_WS_PORT: "0" }),
          {
            from,
          },
        );
        await stop(first);
      }
    } else {
      const db = await createDatabase();
      const prefix = `edge-ingest-bench-${randomBytes(4).toString("hex")}`;
      removals.push(db.drop, () => deleteRedisPrefix(prefix));
      extra = {
        DATABASE_URL: db.url,
        REDIS_URL,
        REDIS_PREFIX: prefix,
        ADMIN_TOKEN,
        ROLES: role,
        MIGRATE_ON_START: "false",
      };
    }
    const started = Date.now();
    const service = await startService(`footprint-${role}`, await serviceEnv({ ...extra, MQTT_WS_PORT: "0" }), {
      from,
    });
    const startSeconds = (Date.now() - started) / 1000;
    removals.push(() => stop(service));
    await new Promise((resolve) => setTimeout(resolve, settleMs));
    return { role, from, startSeconds, rssMiB: currentRssMiB(service.child.pid as number) };
  } finally {
    for (const remove of removals.reverse()) await remove();
  }
}

export async function runFootprint(settleMs = 20_000): Promise<FootprintResult[]> {
  const results: FootprintResult[] = [];
  for (const role of ROLES) {
    for (const from of ["build", "sources"] as const) {
      process.stderr.write(`footprint: ${role} (${from})…\n`);
      results.push(await measure(role, from, settleMs));
    }
  }
  return results;
}
