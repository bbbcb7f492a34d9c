/**
 * Idle connections: the resident memory a broker process (distributed mode, roles api + broker)
 * spends per authenticated, idle MQTT connection, the connections held by a process of their own.
 */
import { randomBytes } from "node:crypto";
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
  rssAfterMiB: number;
  kibPerConnection: number;
}

const settle = () => new Promise((resolve) => setTimeout(resolve, 5000));

async function measure(connections: number): Promise<IdleResult> {
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
    await settle();
    const pid = broker.child.pid as number;
    const rssBeforeMiB = currentRssMiB(pid);
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
    await settle();
    const rssAfterMiB = currentRssMiB(pid);
    await stop(holder, "SIGKILL");
    return {
      connections,
      rssBeforeMiB,
      rssAfterMiB,
      kibPerConnection: ((rssAfterMiB - rssBeforeMiB) * 1024) / connections,
    };
  } finally {
    await stop(broker);
    await db.drop();
    await deleteRedisPrefix(prefix);
  }
}

export async function runIdle(counts: number[]): Promise<IdleResult[]> {
  const results: IdleResult[] = [];
  for (const count of counts) {
    process.stderr.write(`idle connections: ${count}…\n`);
    results.push(await measure(count));
  }
  return results;
}
