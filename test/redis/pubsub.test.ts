import { Redis } from "ioredis";
import pino from "pino";
import { afterEach, describe, expect, it } from "vitest";
import { RedisPubSub, SUBSCRIBER_CHECK_MS } from "../../src/pubsub.ts";
import { redisConnector } from "../../src/redis/connection.ts";
import { eventually } from "../helpers/http.ts";
import { startOwnRedis } from "../helpers/redis-server.ts";

const cleanups: (() => Promise<unknown>)[] = [];
afterEach(async () => {
  while (cleanups.length) await cleanups.pop()?.();
});

describe("RedisPubSub", () => {
  it("announces its subscriptions again after a reconnect, so no publisher keeps skipping it", async () => {
    const redis = await startOwnRedis();
    cleanups.push(() => redis.remove());
    const connect = redisConnector({ url: redis.url });
    const logger = pino({ level: "silent" });
    const listening = new RedisPubSub(connect, "t", logger);
    const publishing = new RedisPubSub(connect, "t", logger);
    const admin = new Redis(redis.url);
    cleanups.push(
      () => listening.close(),
      () => publishing.close(),
      async () => admin.disconnect(),
    );
    const received: string[] = [];
    await listening.subscribe("feed", (message) => received.push(message));
    expect(await publishing.hasSubscribers("feed")).toBe(true);

    // The listener's subscriptions drop; a publisher asking now learns "nobody listens" and caches it.
    await new Promise((resolve) => setTimeout(resolve, SUBSCRIBER_CHECK_MS + 10));
    // The listener's is the subscriber with two channels (the feed and the joins).
    const clients = (await admin.call("CLIENT", "LIST", "TYPE", "pubsub")) as string;
    const id = /^id=(\d+) .* sub=2 /m.exec(clients)?.[1];
    await admin.call("CLIENT", "KILL", "ID", id as string);
    expect(await publishing.hasSubscribers("feed")).toBe(false);
    await eventually(async () => {
      const [, count] = (await admin.pubsub("NUMSUB", "t:feed")) as [string, number];
      return Number(count) > 0 ? true : undefined;
    });
    // Well inside the cache's lifetime, the publisher knows again.
    await eventually(
      async () => ((await publishing.hasSubscribers("feed")) ? true : undefined),
      SUBSCRIBER_CHECK_MS / 3,
    );
    await publishing.publish("feed", "after the reconnect");
    await eventually(async () => (received.includes("after the reconnect") ? true : undefined));
  });
});
