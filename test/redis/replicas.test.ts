import { randomUUID } from "node:crypto";
import { Redis } from "ioredis";
import pino from "pino";
import { afterEach, describe, expect, it } from "vitest";
import { BullmqSubmissionQueue } from "../../src/ingest/bullmq-queue.ts";
import { redisConnector } from "../../src/redis/connection.ts";
import { ReplicaShortfallError, ReplicaWait } from "../../src/redis/replicas.ts";
import { eventually } from "../helpers/http.ts";
import { startOwnRedis } from "../helpers/redis-server.ts";
import { uniqueId } from "../helpers/services.ts";

const cleanups: (() => Promise<unknown>)[] = [];
afterEach(async () => {
  while (cleanups.length) await cleanups.pop()?.();
});

/** A primary with one replica in sync, a connection to the primary and its ReplicaWait. */
async function replicated(timeoutMs: number) {
  const primary = await startOwnRedis();
  cleanups.push(() => primary.remove());
  const replica = await startOwnRedis({ args: ["--replicaof", "127.0.0.1", String(primary.port)] });
  cleanups.push(() => replica.remove());
  const connection = new Redis(primary.url);
  cleanups.push(async () => connection.disconnect());
  const replicas = new ReplicaWait(connection, 1, timeoutMs);
  await eventually(async () => ((await connection.info("replication")).includes("state=online") ? true : undefined));
  const waits = async () => Number(/cmdstat_wait:calls=(\d+)/.exec(await connection.info("commandstats"))?.[1] ?? 0);
  /** A write and its confirmation, as the queue makes them. */
  const write = async (key: string) => {
    const writtenAt = replicas.epoch;
    await connection.set(key, "1");
    await replicas.confirm(writtenAt);
  };
  return { replica, connection, replicas, waits, write };
}

describe("ReplicaWait", () => {
  it("confirms many writes with few WAITs", async () => {
    const { waits, write } = await replicated(1000);
    await Promise.all(Array.from({ length: 200 }, (_, i) => write(`k${i}`)));
    expect(await waits()).toBeLessThanOrEqual(3);
  });

  it("refuses every write while the replica does not answer, one WAIT in flight at a time", async () => {
    const { replica, replicas, waits, write } = await replicated(200);
    replica.pause();
    // Writes arriving steadily, as publishes do: 100 over a second, against WAITs of 200 ms.
    const writes: Promise<unknown>[] = [];
    for (let i = 0; i < 100; i++) {
      writes.push(
        write(`k${i}`).then(
          () => "confirmed",
          (error: Error) => error,
        ),
      );
      await new Promise((resolve) => setTimeout(resolve, 10));
    }
    const outcomes = await Promise.all(writes);
    expect(replicas.shortfall).toMatch(/0 of REDIS_MIN_REPLICAS=1 replicas confirm/);
    replica.resume();
    expect(outcomes.every((outcome) => outcome instanceof ReplicaShortfallError)).toBe(true);
    expect((outcomes[0] as Error).message).toMatch(/0 of REDIS_MIN_REPLICAS=1/);
    // Writes that completed while a WAIT was out share the next one: no pile of WAITs on the connection.
    expect(await waits()).toBeLessThanOrEqual(10);
    await eventually(async () => write("after").then(() => true));
    expect(replicas.shortfall).toBeUndefined();
  });

  it("makes the queue ready again once the replicas are back, with nothing written meanwhile", async () => {
    const primary = await startOwnRedis();
    cleanups.push(() => primary.remove());
    const replica = await startOwnRedis({ args: ["--replicaof", "127.0.0.1", String(primary.port)] });
    cleanups.push(() => replica.remove());
    const queue = await BullmqSubmissionQueue.open({
      connect: redisConnector({ url: primary.url }),
      prefix: `edge-ingest-test-${uniqueId()}`,
      attempts: 1,
      backoffMs: 10,
      commandTimeoutMs: 5000,
      minReplicas: 1,
      // Long enough for a replica on a busy machine (CI) to confirm the first write.
      replicaTimeoutMs: 1000,
      logger: pino({ level: "silent" }),
    });
    cleanups.push(() => queue.close());
    const primaryAdmin = new Redis(primary.url);
    cleanups.push(async () => primaryAdmin.disconnect());
    await eventually(async () =>
      (await primaryAdmin.info("replication")).includes("state=online") ? true : undefined,
    );
    const submission = () => ({
      id: randomUUID(),
      tenantId: randomUUID(),
      agentId: "a",
      source: "http" as const,
      receivedAt: Date.now(),
      metrics: [{ name: "x", value: 1, ts: Date.now() }],
    });
    await queue.submit(submission());
    replica.pause();
    await expect(queue.submit(submission())).rejects.toThrow(ReplicaShortfallError);
    await expect(queue.ping()).rejects.toThrow(/nothing can be acknowledged: 0 of REDIS_MIN_REPLICAS=1/);
    replica.resume();
    await eventually(async () =>
      queue.ping().then(
        () => true,
        () => undefined,
      ),
    );
  });

  it("never confirms a write made before its connection reconnected", async () => {
    const { connection, replicas } = await replicated(1000);
    const writtenAt = replicas.epoch;
    await connection.set("before", "1");
    const ready = new Promise((resolve) => connection.once("ready", resolve));
    connection.disconnect(true);
    await ready;
    await expect(replicas.confirm(writtenAt)).rejects.toThrow(/connection to Redis changed/);
  });
});
