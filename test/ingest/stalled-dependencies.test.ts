import pg from "pg";
import { describe, expect, it } from "vitest";
import type { RunningApp } from "../../src/app.ts";
import { bearer, createTenant, eventually, metricValue, request, type TenantFixture } from "../helpers/http.ts";
import { connect, sleep } from "../helpers/mqtt.ts";
import { distributedNodes } from "../helpers/nodes.ts";
import { startOwnPostgres } from "../helpers/postgres-server.ts";
import { startOwnRedis } from "../helpers/redis-server.ts";
import {
  createTestDatabase,
  deleteRedisPrefix,
  distributedUnavailable,
  REDIS_URL,
  uniqueId,
} from "../helpers/services.ts";

const skip = Boolean(await distributedUnavailable());
const ADMIN_TOKEN = `admin-${"y".repeat(40)}`;
const { cleanups, startNode, track } = distributedNodes(ADMIN_TOKEN);

/** /readyz's answer and how long it took. */
async function readiness(app: RunningApp): Promise<{ status: number; checks: Record<string, string>; ms: number }> {
  const started = Date.now();
  const answer = await request<{ checks: Record<string, string> }>(`${app.httpUrl}/readyz`);
  return { status: answer.status, checks: answer.body.checks, ms: Date.now() - started };
}

/** The tenant's agent, connected to the app's broker. */
const connectAgent = (app: RunningApp, tenant: TenantFixture, options: { reconnectPeriod?: number } = {}) =>
  connect(`mqtt://127.0.0.1:${app.mqttPorts?.tcp}`, {
    username: tenant.agent.username,
    password: tenant.agent.password,
    ...options,
  });

const logged = (lines: string[], message: string) => lines.some((line) => JSON.parse(line).msg === message);

async function storedWithDedupeId(databaseUrl: string, dedupeId: string): Promise<number> {
  const client = new pg.Client(databaseUrl);
  await client.connect();
  try {
    const { rows } = await client.query<{ n: string }>(
      "SELECT count(*) AS n FROM metrics WHERE name = 'frozen' AND dedupe_id = $1",
      [dedupeId],
    );
    return Number(rows[0]?.n);
  } finally {
    await client.end();
  }
}

describe.skipIf(skip)("a dependency that stops answering", () => {
  // The queue write gives up after its timeout and is written again: longer or shorter than the
  // freeze, the acknowledgement is held on the same connection.
  for (const timeoutMs of [10_000, 1_000]) {
    it(`Redis frozen (REDIS_COMMAND_TIMEOUT_MS ${timeoutMs}): acknowledgements held say so within 5 s, /readyz answers 'not ready' at once; the publish is acknowledged on its connection after, stored once`, async () => {
      const redis = await startOwnRedis();
      cleanups.push(() => redis.remove());
      const db = await createTestDatabase();
      cleanups.push(db.drop);
      const lines: string[] = [];
      const app = await startNode(
        { DATABASE_URL: db.url, REDIS_URL: redis.url, REDIS_COMMAND_TIMEOUT_MS: String(timeoutMs) },
        lines,
      );
      const tenant = await createTenant(app.httpUrl, ADMIN_TOKEN);
      const agent = track(await connectAgent(app, tenant, { reconnectPeriod: 200 }));
      let closes = 0;
      agent.on("close", () => closes++);
      const topic = `metrics/${tenant.tenantId}/${tenant.agent.agentId}/frozen`;
      await agent.publishAsync(topic, JSON.stringify({ value: 0, dedupe_id: "before" }), { qos: 1 });

      redis.pause();
      try {
        const frozenAt = Date.now();
        const acknowledged = agent.publishAsync(topic, JSON.stringify({ value: 1, dedupe_id: "during" }), { qos: 1 });
        await eventually(
          async () => logged(lines, "acknowledgements held: waiting on the queue's Redis") || undefined,
          5000,
        );
        expect(Date.now() - frozenAt).toBeLessThan(5000);
        const during = await readiness(app);
        expect(during.status).toBe(503);
        expect(during.ms).toBeLessThan(1000);
        expect(during.checks.queue).toMatch(/no answer within/);
        await sleep(Math.max(0, frozenAt + 6000 - Date.now()));
        expect(await metricValue(app.httpUrl, "edge_ingest_held", { path: "acknowledgement" })).toBe(1);
        if (timeoutMs < 6000) {
          // A write has timed out and is being written again: an HTTP client is told to come back
          // instead of holding its request open (after its tenant's budget lease gives up too).
          const started = Date.now();
          const answer = await request<{ error: { code: string; message: string } }>(`${app.httpUrl}/api/v1/metrics`, {
            auth: bearer(tenant.ingestToken),
            body: { agent_id: tenant.agent.agentId, metrics: [{ name: "frozen", value: 2, dedupe_id: "http-during" }] },
          });
          expect(answer.status).toBe(503);
          expect(answer.body.error.code).toBe("unavailable");
          expect(answer.body.error.message).toMatch(/REDIS_COMMAND_TIMEOUT_MS/);
          expect(Date.now() - started).toBeLessThan(timeoutMs + 1000);
        }
        redis.resume();
        await acknowledged;
      } finally {
        redis.resume();
      }
      expect(closes).toBe(0);
      await eventually(async () => ((await readiness(app)).status === 200 ? true : undefined));
      await eventually(async () => logged(lines, "acknowledgements flowing again") || undefined);
      await eventually(async () => ((await storedWithDedupeId(db.url, "during")) === 1 ? true : undefined), 15_000);
      await sleep(500);
      expect(await storedWithDedupeId(db.url, "during")).toBe(1);
      expect(await storedWithDedupeId(db.url, "http-during")).toBe(0);
    }, 60_000);
  }

  it("PostgreSQL frozen: storage is held and says so within 5 s, /readyz answers 'not ready' at once, and the readings are stored after", async () => {
    const postgres = await startOwnPostgres();
    cleanups.push(() => postgres.remove());
    const prefix = `edge-ingest-test-${uniqueId()}`;
    cleanups.push(() => deleteRedisPrefix(prefix));
    const lines: string[] = [];
    const app = await startNode(
      {
        DATABASE_URL: postgres.url,
        REDIS_URL,
        REDIS_PREFIX: prefix,
        DATABASE_TIMEOUT_MS: "2000",
        JOB_BACKOFF_MS: "100",
        DATABASE_WAIT_MAX_MS: "500",
      },
      lines,
    );
    const tenant = await createTenant(app.httpUrl, ADMIN_TOKEN);
    const agent = track(await connectAgent(app, tenant));
    const topic = `metrics/${tenant.tenantId}/${tenant.agent.agentId}/frozen`;

    await postgres.pause();
    try {
      const frozenAt = Date.now();
      // Acknowledged: the queue has it; storing it waits for the database.
      await agent.publishAsync(topic, JSON.stringify({ value: 1, dedupe_id: "during" }), { qos: 1 });
      await eventually(async () => logged(lines, "storage held: waiting on the database") || undefined, 5000);
      expect(Date.now() - frozenAt).toBeLessThan(5000);
      const during = await readiness(app);
      expect(during.status).toBe(503);
      expect(during.ms).toBeLessThan(1000);
      expect(during.checks.database).toMatch(/no answer within/);
      // The statement's timeout turns the hang into the worker's wait for the database.
      await eventually(
        async () => logged(lines, "database unavailable: jobs wait for it and none is failed meanwhile") || undefined,
        5000,
      );
    } finally {
      await postgres.resume();
    }
    await eventually(async () => ((await readiness(app)).status === 200 ? true : undefined));
    await eventually(async () => ((await storedWithDedupeId(postgres.url, "during")) === 1 ? true : undefined), 15_000);
    await eventually(async () => logged(lines, "storage flowing again") || undefined);
  }, 90_000);
});
