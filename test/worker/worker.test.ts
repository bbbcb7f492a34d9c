import { randomUUID } from "node:crypto";
import { Queue } from "bullmq";
import { Redis } from "ioredis";
import pino from "pino";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startApp } from "../../src/app.ts";
import { LocalSharedQueue } from "../../src/broker/shared/queue.ts";
import { loadConfig } from "../../src/config.ts";
import { QueueUnavailableError } from "../../src/errors.ts";
import type { PrismaClient } from "../../src/generated/prisma/client.ts";
import { BullmqSubmissionQueue, INGEST_QUEUE_NAME } from "../../src/ingest/bullmq-queue.ts";
import { InProcessQueue } from "../../src/ingest/in-process-queue.ts";
import type { MetricSubmission } from "../../src/ingest/submission.ts";
import { FanOut } from "../../src/live/fanout.ts";
import { LocalPubSub, RedisPubSub } from "../../src/pubsub.ts";
import { redisConnector } from "../../src/redis/connection.ts";
import { type Database, openDatabase } from "../../src/store/database.ts";
import { partitionsOf } from "../../src/store/partitions.ts";
import { ReadingStore } from "../../src/store/readings.ts";
import { createTelemetry, type Telemetry } from "../../src/telemetry/prometheus.ts";
import { StallWatch } from "../../src/telemetry/stall-watch.ts";
import { startBullmqWorker, type WorkerOptions } from "../../src/worker/bullmq-worker.ts";
import { createProcessor } from "../../src/worker/processor.ts";
import { basic, bearer, createTenant, eventually, metricValue, request } from "../helpers/http.ts";
import { startOwnPostgres } from "../helpers/postgres-server.ts";
import { freePort, startOwnRedis } from "../helpers/redis-server.ts";
import {
  createTestDatabase,
  deleteRedisPrefix,
  distributedUnavailable,
  REDIS_URL,
  uniqueId,
} from "../helpers/services.ts";

/** Shared subscriptions in this process, with no group: the processor offers nothing. */
const sharedQueue = () => new LocalSharedQueue(new LocalPubSub(), 1000);

const skipDistributed = Boolean(await distributedUnavailable());
const logger = pino({ level: "silent" });
const DAY = 86_400_000;

/** The API and a worker in one process, as the test configures them. */
const apiAndWorker = (env: Record<string, string>) =>
  loadConfig({
    HTTP_HOST: "127.0.0.1",
    HTTP_PORT: "0",
    ROLES: "api,worker",
    REDIS_PERSISTENCE: "none",
    LOG_LEVEL: "silent",
    ...env,
  });

/** The same on the shared Redis under `prefix`, a job failing for good after two quick attempts. */
const apiAndQuickWorker = (databaseUrl: string, prefix: string, adminToken: string, env: Record<string, string> = {}) =>
  apiAndWorker({
    DATABASE_URL: databaseUrl,
    REDIS_URL,
    REDIS_PREFIX: prefix,
    ADMIN_TOKEN: adminToken,
    JOB_ATTEMPTS: "2",
    JOB_BACKOFF_MS: "10",
    ...env,
  });

/** The production processor storing into `database`, no one watching live. */
const storingIn = (database: Database, telemetry: Telemetry) =>
  createProcessor({
    readings: new ReadingStore(database.sql, DAY),
    fanout: new FanOut(new LocalPubSub()),
    shared: sharedQueue(),
    telemetry,
    logger,
  });

function submission(tenantId: string, metrics: MetricSubmission["metrics"]): MetricSubmission {
  return { id: randomUUID(), tenantId, agentId: "dev-1", source: "http", receivedAt: Date.now(), metrics };
}

describe("InProcessQueue", () => {
  it("refuses work past its bound and waits for in-flight work on close", async () => {
    let release!: () => void;
    const gate = new Promise<void>((resolve) => (release = resolve));
    const done: string[] = [];
    const queue = new InProcessQueue(async (s) => {
      await gate;
      done.push(s.id);
    }, 1);
    const first = queue.submit(submission("t", []));
    await expect(queue.submit(submission("t", []))).rejects.toThrow(QueueUnavailableError);
    expect(await queue.depth()).toBe(1);
    const closed = queue.close();
    await expect(queue.submit(submission("t", []))).rejects.toThrow(/shutting down/);
    release();
    await first;
    await closed;
    expect(done).toHaveLength(1);
  });

  it("passes a processing failure to the producer", async () => {
    const queue = new InProcessQueue(async () => {
      throw new Error("disk on fire");
    }, 4);
    await expect(queue.submit(submission("t", []))).rejects.toThrow("disk on fire");
    expect(await queue.depth()).toBe(0);
  });
});

describe.skipIf(skipDistributed)("BullMQ worker", () => {
  let db: Database;
  let prisma: PrismaClient;
  let dropDb: () => Promise<void>;
  const prefix = `edge-ingest-test-${uniqueId()}`;
  const workerOptions = (
    process: WorkerOptions["process"],
    telemetry: WorkerOptions["telemetry"],
    probeDatabase: WorkerOptions["probeDatabase"],
  ): WorkerOptions => ({
    connect: redisConnector({ url: REDIS_URL }),
    prefix,
    concurrency: 2,
    process,
    probeDatabase,
    backoffMs: 10,
    maxBackoffMs: 200,
    lockMs: 10_000,
    stalledCheckMs: 5000,
    maxStalled: 5,
    storage: new StallWatch("storage", 2000, logger),
    telemetry,
    logger,
  });

  beforeAll(async () => {
    const test = await createTestDatabase();
    dropDb = test.drop;
    db = await openDatabase({ url: test.url }, { migrate: true, logger });
    prisma = await db.prisma();
  });
  afterAll(async () => {
    await db?.close();
    await dropDb?.();
    await deleteRedisPrefix(prefix);
  });

  it("counts each submission of a statement once: completed, or failed when it fails on its own", async () => {
    const tenantId = (await prisma.tenant.create({ data: { name: "t" } })).id;
    const telemetry = createTelemetry();
    const process = storingIn(db, telemetry);
    const good = (value: number) => submission(tenantId, [{ name: "ok", value, ts: Date.now() }]);
    const bad = submission(tenantId, [{ name: "bad name", value: 2, ts: Date.now() }]);
    // The first is written alone; the three behind it share a statement, which fails for the bad one.
    const outcomes = await Promise.allSettled([process(good(1)), process(bad), process(good(3)), process(good(4))]);
    expect(outcomes.map((outcome) => outcome.status)).toEqual(["fulfilled", "rejected", "fulfilled", "fulfilled"]);
    const stored = await prisma.metric.findMany({ where: { tenantId }, orderBy: { value: "asc" } });
    expect(stored.map((row) => row.value)).toEqual([1, 3, 4]);
    expect(await telemetry.jobsCompleted.get()).toMatchObject({ values: [{ value: 3 }] });
    expect(await telemetry.jobsFailed.get()).toMatchObject({ values: [{ value: 1 }] });
  });

  it("retries a failing job with backoff, then keeps it in the failed set with its reason, half-applied never", async () => {
    const tenantId = (await prisma.tenant.create({ data: { name: "t" } })).id;
    const telemetry = createTelemetry();
    const fanout = new FanOut(new LocalPubSub());
    const process = createProcessor({
      readings: new ReadingStore(db.sql, DAY),
      fanout,
      shared: sharedQueue(),
      telemetry,
      logger,
    });
    const queue = await BullmqSubmissionQueue.open({
      connect: redisConnector({ url: REDIS_URL }),
      prefix,
      attempts: 3,
      backoffMs: 10,
      logger,
    });
    const worker = await startBullmqWorker(workerOptions(process, telemetry, () => db.ping()));
    const inspect = new Queue(INGEST_QUEUE_NAME, { connection: new Redis(REDIS_URL), prefix });
    try {
      const bad = submission(tenantId, [
        { name: "ok", value: 1, ts: Date.now() },
        { name: "bad name", value: 2, ts: Date.now() },
      ]);
      const good = submission(tenantId, [{ name: "ok", value: 3, ts: Date.now() }]);
      await queue.submit(bad);
      await queue.submit(good);

      const failed = await eventually(async () => {
        const [job] = await inspect.getFailed();
        return job;
      });
      expect(failed.id).toBe(bad.id);
      expect(failed.attemptsMade).toBe(3);
      expect(failed.failedReason).toMatch(/metrics_name_check/);
      expect(failed.data).toEqual(bad);
      await eventually(async () => ((await prisma.metric.count({ where: { tenantId } })) === 1 ? true : undefined));
      const rows = await prisma.metric.findMany({ where: { tenantId } });
      expect(rows.map((r) => r.value)).toEqual([3]);
      expect(await telemetry.jobsFailed.get()).toMatchObject({ values: [{ value: 3 }] });
    } finally {
      await worker.close();
      await queue.close();
      await inspect.close();
    }
  });

  it("waits through a database outage without using up an attempt, then stores every submission once", async () => {
    const postgres = await startOwnPostgres();
    const own = await openDatabase({ url: postgres.url }, { migrate: true, logger });
    const ownPrisma = await own.prisma();
    const outagePrefix = `edge-ingest-test-${uniqueId()}`;
    const telemetry = createTelemetry();
    const process = storingIn(own, telemetry);
    const queue = await BullmqSubmissionQueue.open({
      connect: redisConnector({ url: REDIS_URL }),
      prefix: outagePrefix,
      attempts: 2,
      backoffMs: 10,
      logger,
    });
    const worker = await startBullmqWorker({
      ...workerOptions(process, telemetry, () => own.ping()),
      prefix: outagePrefix,
    });
    try {
      const tenantId = (await ownPrisma.tenant.create({ data: { name: "t" } })).id;
      const reading = (n: number) => submission(tenantId, [{ name: "x", value: n, ts: Date.now(), dedupeId: `r${n}` }]);
      for (const n of [1, 2, 3]) await queue.submit(reading(n));
      await eventually(async () => ((await ownPrisma.metric.count()) === 3 ? true : undefined));

      await postgres.stop();
      for (let n = 4; n <= 12; n++) await queue.submit(reading(n));
      // Two attempts 10 ms apart would have failed every one of them long before this.
      await new Promise((resolve) => setTimeout(resolve, 2000));
      expect((await queue.failedJobs(10)).count).toBe(0);
      await postgres.start();

      await eventually(async () => ((await ownPrisma.metric.count()) === 12 ? true : undefined), 20_000);
      expect((await queue.failedJobs(10)).count).toBe(0);
      expect((await telemetry.jobsFailedFinal.get()).values[0]?.value ?? 0).toBe(0);
    } finally {
      await worker.close();
      await queue.close();
      await own.close();
      await postgres.remove();
      await deleteRedisPrefix(outagePrefix);
    }
  }, 60_000);

  it("brings the partitions up to date when the database comes back, before the waiting jobs go on; answers 503 meanwhile", async () => {
    const postgres = await startOwnPostgres();
    const adminToken = "p".repeat(40);
    const outagePrefix = `edge-ingest-test-${uniqueId()}`;
    const logLines: string[] = [];
    const app = await startApp(
      apiAndQuickWorker(postgres.url, outagePrefix, adminToken, {
        DATABASE_WAIT_MAX_MS: "200",
        CREDENTIAL_CACHE_TTL_MS: "60000",
      }),
      pino({ level: "info" }, { write: (line: string) => logLines.push(line) }),
    );
    const database = await openDatabase({ url: postgres.url }, { migrate: false, logger });
    try {
      const tenant = await createTenant(app.httpUrl, adminToken);
      const post = (dedupeId: string) =>
        request(`${app.httpUrl}/api/v1/metrics`, {
          auth: tenant.agent.auth,
          body: { metrics: [{ name: "x", value: 1, dedupe_id: dedupeId }] },
        });
      const stored = async (db: Database) =>
        (await db.sql<{ n: number }>("SELECT count(*)::int AS n FROM metrics", []))[0]?.n;
      // Stored before the outage (and the agent's credentials are cached: the API asks no database).
      expect((await post("before-the-outage")).status).toBe(202);
      await eventually(async () => ((await stored(database)) === 1 ? true : undefined));
      // As after an outage longer than partitions are made ahead: none holds the arrival.
      const now = Date.now();
      const today = (await partitionsOf(database.sql, "ingest_submissions")).find((p) => p.from <= now && now < p.to);
      if (!today) throw new Error("no partition of ingest_submissions holds now");
      await database.sql(`DROP TABLE "${today.name}"`, []);
      await database.close();
      await postgres.stop();
      expect((await post("during-the-outage")).status).toBe(202);
      // Credentials the API has not cached need the database: not there, it says so, and when to retry.
      const uncached = await request(`${app.httpUrl}/api/v1/metrics`, {
        auth: basic("ag_nobodycached", "secret"),
        body: { metrics: [{ name: "x", value: 1 }] },
      });
      expect(uncached.status).toBe(503);
      expect(uncached.body.error.code).toBe("unavailable");
      expect(uncached.headers.get("retry-after")).toBe("1");
      const failures = logLines.map((line) => JSON.parse(line)).filter((line) => line.msg === "request failed");
      expect(failures).toEqual([expect.objectContaining({ level: 50, url: "/api/v1/metrics" })]);
      await postgres.start();

      const back = await openDatabase({ url: postgres.url }, { migrate: false, logger });
      try {
        await eventually(async () => ((await stored(back)) === 2 ? true : undefined), 20_000);
        expect(
          (await request(`${app.httpUrl}/api/v1/admin/jobs/failed`, { auth: bearer(adminToken) })).body.count,
        ).toBe(0);
      } finally {
        await back.close();
      }
    } finally {
      await app.close();
      await postgres.remove();
      await deleteRedisPrefix(outagePrefix);
    }
  }, 60_000);

  it("keeps a submission the database refuses in the failed set, and `jobs retry` stores it once", async () => {
    const test = await createTestDatabase();
    const adminToken = "r".repeat(40);
    const retryPrefix = `edge-ingest-test-${uniqueId()}`;
    const app = await startApp(apiAndQuickWorker(test.url, retryPrefix, adminToken), logger);
    const database = await openDatabase({ url: test.url }, { migrate: false, logger });
    const databasePrisma = await database.prisma();
    try {
      const url = app.httpUrl;
      const tenant = await createTenant(url, adminToken);
      // A rule the database enforces and the service does not know: the submission fails for good.
      await databasePrisma.$executeRawUnsafe(`ALTER TABLE metrics ADD CONSTRAINT test_blocked CHECK (value <> 666)`);
      const posted = await request(`${url}/api/v1/metrics`, {
        auth: tenant.agent.auth,
        body: { metrics: [{ name: "x", value: 666, dedupe_id: "the-one" }] },
      });
      expect(posted.status).toBe(202);
      const failed = await eventually(async () => {
        const { body } = await request(`${url}/api/v1/admin/jobs/failed`, { auth: bearer(adminToken) });
        return body.count === 1 ? body : undefined;
      });
      expect(failed.reasons[0].reason).toMatch(/test_blocked/);
      expect(failed.jobs[0]).toMatchObject({ tenant_id: tenant.tenantId, readings: 1, attempts: 2 });
      expect(await metricValue(url, "edge_ingest_jobs_failed_waiting")).toBe(1);

      await databasePrisma.$executeRawUnsafe("ALTER TABLE metrics DROP CONSTRAINT test_blocked");
      const retry = (body: unknown) =>
        request(`${url}/api/v1/admin/jobs/failed/retry`, { auth: bearer(adminToken), body });
      expect((await retry({ all: true })).body).toEqual({ retried: 1 });
      const stored = async () => databasePrisma.metric.count({ where: { tenantId: tenant.tenantId } });
      await eventually(async () => ((await stored()) === 1 ? true : undefined));
      expect((await retry({ ids: [failed.jobs[0].id] })).body).toEqual({ retried: 0 });
      expect((await retry({})).status).toBe(400);
      await new Promise((resolve) => setTimeout(resolve, 300));
      expect(await stored()).toBe(1);
    } finally {
      await app.close();
      await database.close();
      await test.drop();
      await deleteRedisPrefix(retryPrefix);
    }
  });

  it("does not fail a stored job when live fan-out is down, and counts it", async () => {
    const tenantId = (await prisma.tenant.create({ data: { name: "t" } })).id;
    const telemetry = createTelemetry();
    const deadRedis = new RedisPubSub(redisConnector({ url: `redis://127.0.0.1:${await freePort()}` }), prefix, logger);
    const process = createProcessor({
      readings: new ReadingStore(db.sql, DAY),
      fanout: new FanOut(deadRedis),
      shared: sharedQueue(),
      telemetry,
      logger,
    });
    try {
      await process(submission(tenantId, [{ name: "x", value: 1, ts: Date.now() }]));
      expect(await prisma.metric.count({ where: { tenantId } })).toBe(1);
      expect((await telemetry.fanoutErrors.get()).values[0]?.value).toBe(1);
    } finally {
      await deadRedis.close();
    }
  });

  it("answers 503 and stores nothing while Redis is unreachable, and takes work again when it is back", async () => {
    const redis = await startOwnRedis();
    const test = await createTestDatabase();
    const app = await startApp(
      apiAndWorker({
        DATABASE_URL: test.url,
        REDIS_URL: redis.url,
        ADMIN_TOKEN: "a".repeat(40),
      }),
      logger,
    );
    try {
      const tenant = await createTenant(app.httpUrl, "a".repeat(40));
      const post = () =>
        request(`${app.httpUrl}/api/v1/metrics`, {
          auth: tenant.agent.auth,
          body: { metrics: [{ name: "x", value: 1 }] },
        });
      await redis.stop();
      const refused = await post();
      expect(refused.status).toBe(503);
      expect(refused.body.error.code).toBe("unavailable");
      expect(refused.headers.get("retry-after")).toBe("1");
      expect((await request(`${app.httpUrl}/readyz`)).status).toBe(503);

      await redis.start();
      const accepted = await eventually(async () => {
        const answer = await post();
        return answer.status === 202 ? answer : undefined;
      });
      expect(accepted.body.accepted).toBe(1);
      const stored = await eventually(async () => {
        const { body } = await request(`${app.httpUrl}/api/v1/metrics`, { auth: tenant.agent.auth });
        return body.items.length > 0 ? body.items : undefined;
      });
      // Without a dedupe_id, a refused request that had been stored anyway would show as a second row.
      await new Promise((resolve) => setTimeout(resolve, 300));
      const { body } = await request(`${app.httpUrl}/api/v1/metrics`, { auth: tenant.agent.auth });
      expect(stored).toHaveLength(1);
      expect(body.items).toHaveLength(1);
    } finally {
      await app.close();
      await redis.remove();
      await test.drop();
    }
  });
});
