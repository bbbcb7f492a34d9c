import { type ChildProcess, spawn } from "node:child_process";
import { readFile } from "node:fs/promises";
import path from "node:path";
import type { MqttClient } from "mqtt";
import pino from "pino";
import { afterAll, describe, expect, it } from "vitest";
import { openDatabase } from "../../src/store/database.ts";
import { CLI } from "../helpers/entry.ts";
import { createTenant } from "../helpers/http.ts";
import { connect } from "../helpers/mqtt.ts";
import { freePort, startOwnRedis } from "../helpers/redis-server.ts";
import { startServiceProcess } from "../helpers/service-process.ts";
import { distributedUnavailable, tempDir } from "../helpers/services.ts";

const skip = Boolean(await distributedUnavailable());

/** Starts `edge-ingest serve` (LOG_LEVEL info or finer) and resolves once it logged that it started. */
function serve(env: Record<string, string>): Promise<ChildProcess> {
  const child = spawn(process.execPath, [...CLI, "serve"], {
    env: { ...process.env, ...env },
    stdio: ["ignore", "pipe", "inherit"],
  });
  return new Promise((resolve, reject) => {
    child.stdout?.setEncoding("utf8").on("data", (chunk: string) => {
      if (chunk.includes("edge-ingest started")) resolve(child);
    });
    child.once("exit", (code) => reject(new Error(`serve exited early with ${code}`)));
  });
}

describe("SIGTERM under MQTT load", () => {
  let removeDir: () => Promise<void>;
  let child: ChildProcess | undefined;
  afterAll(async () => {
    // Only a failed run leaves it running.
    if (child?.exitCode === null) child.kill("SIGKILL");
    await removeDir?.();
  });

  it("stores every acknowledged message and exits 0", { timeout: 60_000 }, async () => {
    const data = await tempDir();
    removeDir = data.remove;
    const httpPort = await freePort();
    const mqttPort = await freePort();
    child = await serve({
      DATA_DIR: data.dir,
      HTTP_HOST: "127.0.0.1",
      HTTP_PORT: String(httpPort),
      MQTT_HOST: "127.0.0.1",
      MQTT_PORT: String(mqttPort),
      MQTT_WS_PORT: "0",
      LOG_LEVEL: "info",
    });
    const adminToken = (await readFile(path.join(data.dir, "admin-token"), "utf8")).trim();
    const tenant = await createTenant(`http://127.0.0.1:${httpPort}`, adminToken, "loader");

    const acknowledged: string[] = [];
    let running = true;
    const publisher = async (client: MqttClient, id: number) => {
      for (let n = 0; running; n++) {
        const dedupeId = `p${id}-${n}`;
        const acked = await client
          .publishAsync(`metrics/${tenant.tenantId}/loader/load`, JSON.stringify({ value: n, dedupe_id: dedupeId }), {
            qos: 1,
          })
          .then(
            () => true,
            () => false,
          );
        if (!acked) return;
        if (running) acknowledged.push(dedupeId);
      }
    };
    const clients = await Promise.all(
      [0, 1, 2, 3].map(() =>
        connect(`mqtt://127.0.0.1:${mqttPort}`, { username: tenant.agent.username, password: tenant.agent.password }),
      ),
    );
    // Several messages in flight per client, so the shutdown lands in the middle of batches.
    for (const [i, client] of clients.entries()) for (const j of [0, 1, 2, 3, 4]) publisher(client, i * 10 + j);
    await new Promise((resolve) => setTimeout(resolve, 1500));
    const server = child;
    const exited = new Promise<number | null>((resolve) => server.once("exit", resolve));
    server.kill("SIGTERM");
    expect(await exited).toBe(0);
    running = false;
    // Publishes still waiting now were never acknowledged; mqtt.js would keep them for a reconnect.
    for (const client of clients) client.end(true);

    expect(acknowledged.length).toBeGreaterThan(50);
    const db = await openDatabase({ dataDir: data.dir }, { migrate: false, logger: pino({ level: "silent" }) });
    try {
      const stored = await (await db.prisma()).metric.findMany({
        where: { tenantId: tenant.tenantId },
        select: { dedupeId: true },
      });
      const storedIds = new Set(stored.map((row) => row.dedupeId));
      const lost = acknowledged.filter((id) => !storedIds.has(id));
      expect(lost).toEqual([]);
    } finally {
      await db.close();
    }
  });
});

describe.skipIf(skip)("SIGTERM when in-flight work cannot finish", () => {
  it("gives up after SHUTDOWN_TIMEOUT_MS with exit code 1, the stuck publish never acknowledged", {
    timeout: 60_000,
  }, async () => {
    const redis = await startOwnRedis();
    const service = await startServiceProcess("distributed", {
      REDIS_URL: redis.url,
      ROLES: "api,broker",
      SHUTDOWN_TIMEOUT_MS: "2000",
    });
    try {
      const tenant = await createTenant(service.httpUrl, service.adminToken, "stuck-1");
      const agent = await connect(`mqtt://127.0.0.1:${service.mqttPort}`, {
        username: tenant.agent.username,
        password: tenant.agent.password,
      });
      // Redis stops answering: the publish waits for a queue that never takes it.
      redis.pause();
      let acknowledged = false;
      agent.publishAsync(`metrics/${tenant.tenantId}/stuck-1/load`, "1", { qos: 1 }).then(
        () => (acknowledged = true),
        () => undefined,
      );
      await new Promise((resolve) => setTimeout(resolve, 300));
      const exited = new Promise<number | null>((resolve) => service.child.once("exit", resolve));
      const stoppingAt = Date.now();
      service.child.kill("SIGTERM");
      expect(await exited).toBe(1);
      expect(Date.now() - stoppingAt).toBeGreaterThanOrEqual(2000);
      expect(Date.now() - stoppingAt).toBeLessThan(10_000);
      expect(acknowledged).toBe(false);
      expect(service.stdout()).toContain('"waitingFor":"broker (pending acknowledgements)"');
      agent.end(true);
    } finally {
      redis.resume();
      await service.cleanup();
      await redis.remove();
    }
  });
});
