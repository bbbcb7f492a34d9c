/**
 * Idle connections: the broker's resident memory per authenticated, idle MQTT connection, with
 * the connections held by a load-generator process of their own.
 */
import { mkdtemp, readFile, rm } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { currentRssMiB, freePort, startNode, stop } from "./lib/processes.ts";
import type { LoadPlan } from "./load-generator.ts";

export interface IdleResult {
  connections: number;
  rssBeforeMiB: number;
  rssAfterMiB: number;
  kibPerConnection: number;
}

const settle = () => new Promise((resolve) => setTimeout(resolve, 3000));

async function measure(connections: number): Promise<IdleResult> {
  const dir = await mkdtemp(path.join(os.tmpdir(), "edge-ingest-bench-"));
  const httpPort = await freePort();
  const mqttPort = await freePort();
  const service = await startNode("edge-ingest", "src/main.ts", ["serve"], {
    env: {
      DATA_DIR: dir,
      HTTP_HOST: "127.0.0.1",
      HTTP_PORT: String(httpPort),
      MQTT_HOST: "127.0.0.1",
      MQTT_PORT: String(mqttPort),
      MQTT_WS_PORT: "0",
      MQTT_MAX_CONNECTIONS: String(connections * 2),
      LOG_LEVEL: "info",
    },
    readyText: "edge-ingest started",
  });
  try {
    const adminToken = (await readFile(path.join(dir, "admin-token"), "utf8")).trim();
    const post = async (route: string, body: unknown) =>
      (await (
        await fetch(`http://127.0.0.1:${httpPort}${route}`, {
          method: "POST",
          headers: { authorization: `Bearer ${adminToken}`, "content-type": "application/json" },
          body: JSON.stringify(body),
        })
      ).json()) as Record<string, string>;
    const tenant = await post("/api/v1/admin/tenants", { name: "idle" });
    const agent = await post(`/api/v1/admin/tenants/${tenant.id}/agents`, { agent_id: "idle" });
    await settle();
    const pid = service.child.pid as number;
    const rssBeforeMiB = currentRssMiB(pid);
    const plan: LoadPlan = {
      mode: "idle",
      url: `mqtt://127.0.0.1:${mqttPort}`,
      connections,
      username: agent.username,
      password: agent.password,
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
    await stop(service);
    await rm(dir, { recursive: true, force: true });
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
