/**
 * Idle connections: the resident memory a broker process (distributed mode, roles api + broker)
 * spends per authenticated, idle MQTT connection, the connections held by a process of their own.
 *
 * Opening thousands of connections leaves their garbage (CONNECT handling, authentication, session
 * set-up) in the old generation until V8's memory reducer collects it, once allocation has been quiet
 * for a while (30-60 s here); the idle clients' pings then grow it again slowly between collections.
 * So RSS is sampled every 5 s for 90 s, before and after the connections open: `rssPeakMiB` is the
 * most seen after, `rssAfterMiB` (and the per-connection figure) the least, what the connections hold
 * with their garbage collected, and `rssBeforeMiB` the least before.
 */
import { randomBytes } from "node:crypto";
import { readFileSync } from "node:fs";
import { FILES_BESIDES_CONNECTIONS, openFilesLimit } from "../src/broker/open-files.ts";
import { currentRssMiB, startNode, stop } from "./lib/processes.ts";
import {
  ADMIN_TOKEN,
  agentsFor,
  createDatabase,
  deleteRedisPrefix,
  REDIS_URL,
  serviceEnv,
  startService,
} from "./lib/targets.ts";
import type { LoadPlan } from "./load-generator.ts";

export interface IdleResult {
  connections: number;
  rssBeforeMiB: number;
  rssPeakMiB: number;
  rssAfterMiB: number;
  kibPerConnection: number;
  kibPerConnectionAtPeak: number;
}

const SAMPLE_MS = 5000;
/** How long RSS is sampled before and after the connections open (--quick: too short to settle). */
export const SETTLE_MS = 90_000;

/** RSS of `pid` every 5 s for `settleMs`: the least (garbage collected) and the most it held. */
async function settledRssMiB(pid: number, settleMs: number): Promise<{ settled: number; peak: number }> {
  const samples: number[] = [];
  for (let waited = 0; waited < settleMs; waited += SAMPLE_MS) {
    await new Promise((resolve) => setTimeout(resolve, SAMPLE_MS));
    samples.push(currentRssMiB(pid));
  }
  return { settled: Math.min(...samples), peak: Math.max(...samples) };
}

async function measure(connections: number, settleMs: number): Promise<IdleResult> {
  const db = await createDatabase();
  const prefix = `edge-ingest-bench-${randomBytes(4).toString("hex")}`;
  const env = await serviceEnv({
    DATABASE_URL: db.url,
    REDIS_URL,
    REDIS_PREFIX: prefix,
    ADMIN_TOKEN,
    ROLES: "api,broker",
    MIGRATE_ON_START: "false",
  });
  const broker = await startService("broker", env);
  try {
    const { publishers } = await agentsFor(`http://127.0.0.1:${env.HTTP_PORT}`, ADMIN_TOKEN, 1);
    const [agent] = publishers;
    const pid = broker.child.pid as number;
    const { settled: rssBeforeMiB } = await settledRssMiB(pid, settleMs);
    const plan: LoadPlan = {
      mode: "idle",
      url: `mqtt://127.0.0.1:${env.MQTT_PORT}`,
      connections,
      username: agent?.username,
      password: agent?.password,
    };
    const holder = await startNode("idle-clients", "bench/load-generator.ts", [JSON.stringify(plan)], {
      readyText: "READY",
      timeoutMs: 10 * 60_000,
    });
    const { settled: rssAfterMiB, peak: rssPeakMiB } = await settledRssMiB(pid, settleMs);
    await stop(holder, "SIGKILL");
    const perConnection = (rss: number) => ((rss - rssBeforeMiB) * 1024) / connections;
    return {
      connections,
      rssBeforeMiB,
      rssPeakMiB,
      rssAfterMiB,
      kibPerConnection: perConnection(rssAfterMiB),
      kibPerConnectionAtPeak: perConnection(rssPeakMiB),
    };
  } finally {
    await stop(broker);
    await db.drop();
    await deleteRedisPrefix(prefix);
  }
}

/** Throws, naming the limit, when this process's open-files limit cannot hold `counts` connections. */
export function assertFilesForIdle(counts: number[]): void {
  // The broker and the process holding the connections inherit this process's limit.
  const limit = openFilesLimit(readFileSync("/proc/self/limits", "utf8"));
  const most = Math.max(...counts);
  if (limit !== undefined && limit < most + FILES_BESIDES_CONNECTIONS) {
    throw new Error(
      `idle: ${most} connections need ${most + FILES_BESIDES_CONNECTIONS} open files in the broker and in the ` +
        `process holding them, and this shell allows ${limit}: raise it with \`ulimit -n\` (up to the hard ` +
        "limit, `ulimit -Hn`; above it takes root with CAP_SYS_RESOURCE) or ask for fewer with --idle=…",
    );
  }
}

/** Call `assertFilesForIdle` first, before any longer scenario runs. */
export async function runIdle(counts: number[], settleMs = SETTLE_MS): Promise<IdleResult[]> {
  const results: IdleResult[] = [];
  for (const count of counts) {
    process.stderr.write(`idle connections: ${count}…\n`);
    results.push(await measure(count, settleMs));
  }
  return results;
}
