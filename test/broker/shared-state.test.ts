import { Redis } from "ioredis";
import { afterEach, describe, expect, it } from "vitest";
import { handleUnawaitedReplies } from "../../src/broker/shared-state.ts";
import { type OwnRedis, startOwnRedis } from "../helpers/redis-server.ts";

describe("the broker persistence's Redis connection", () => {
  let redis: OwnRedis | undefined;
  let connection: Redis | undefined;
  const unhandled: unknown[] = [];
  const onUnhandled = (reason: unknown) => unhandled.push(reason);

  afterEach(async () => {
    process.off("unhandledRejection", onUnhandled);
    connection?.disconnect();
    await redis?.remove();
  });

  it("fails a command nobody awaits quietly while Redis is down, and still fails the awaited ones", async () => {
    redis = await startOwnRedis();
    connection = handleUnawaitedReplies(new Redis(redis.url, { maxRetriesPerRequest: 1 }));
    connection.on("error", () => undefined);
    await connection.ping();
    process.on("unhandledRejection", onUnhandled);

    await redis.stop();
    // What aedes-persistence-redis does on every disconnect: `lrem` the will list, not awaited.
    void connection.lrem("wills", 0, "broker:client");
    await expect(connection.get("will:broker:client")).rejects.toThrow(/max retries per request/);
    await new Promise((resolve) => setImmediate(resolve));
    expect(unhandled).toEqual([]);
  });
});
