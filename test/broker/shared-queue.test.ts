import pino from "pino";
import { afterAll, describe, expect, it } from "vitest";
import { type MqttPrincipal, mayReceive, scopesReceiving, shareScope } from "../../src/broker/access.ts";
import { LocalSharedQueue, type SharedMessage, type SharedQueue } from "../../src/broker/shared/queue.ts";
import { RedisSharedQueue } from "../../src/broker/shared/redis-queue.ts";
import { groupId, parseSharedFilter, topicMatches } from "../../src/broker/shared/share.ts";
import { feedbackTopic } from "../../src/broker/topics.ts";
import { LocalPubSub, RedisPubSub } from "../../src/pubsub.ts";
import { redisConnector } from "../../src/redis/connection.ts";
import { eventually } from "../helpers/http.ts";
import { REDIS_URL, redisForStores } from "../helpers/services.ts";

const A = "00000000-0000-4000-8000-00000000000a";
const B = "00000000-0000-4000-8000-00000000000b";

const MATCHING: [string, string, boolean][] = [
  ["a/b", "a/b", true],
  ["a/+", "a/b", true],
  ["a/+", "a/b/c", false],
  ["a/#", "a", true],
  ["a/#", "a/b/c", true],
  ["#", "a/b", true],
  ["#", "$SYS/x", false],
  ["+/b", "$x/b", false],
  ["$x/#", "$x/b", true],
  ["a/+/c", "a//c", true],
  ["a/b", "a/b/", false],
  ["+", "", true],
  ["a/b/c", "a/b", false],
];

describe("shared subscription decisions", () => {
  it.each([
    ["$share/g/a/#", { share: "g", filter: "a/#" }],
    ["$share/g/#", { share: "g", filter: "#" }],
    ["$share/g", "invalid"],
    ["$share/g/", "invalid"],
    ["$share//a", "invalid"],
    ["$share/g+/a", "invalid"],
    ["$share/g#/a", "invalid"],
    ["a/b", undefined],
    ["$SYS/#", undefined],
  ])("reads %j as %j", (filter, expected) => {
    expect(parseSharedFilter(filter)).toEqual(expected);
  });

  it.each(MATCHING)("matches filter %j against topic %j: %s", (filter, topic, expected) => {
    expect(topicMatches(filter, topic)).toBe(expected);
  });

  it("offers a topic to exactly the scopes whose principals may receive it", () => {
    const principals: MqttPrincipal[] = [
      { kind: "admin" },
      { kind: "anonymous" },
      { kind: "agent", tenantId: A, agentId: "dev-1", username: "u1" },
      { kind: "agent", tenantId: B, agentId: "dev-1", username: "u2" },
      { kind: "token", tenantId: A, role: "viewer", username: "v1" },
      { kind: "token", tenantId: B, role: "viewer", username: "v2" },
    ] as MqttPrincipal[];
    const topics = [
      "plain/x",
      "x",
      `metrics/${A}/dev-1/cpu`,
      `metrics/${B}/dev-1/cpu`,
      `metrics/${A}`,
      feedbackTopic(A, "dev-1"),
      feedbackTopic(B, "dev-1"),
      `ingest/${A}/dev-1/other`,
      "$SYS/broker",
    ];
    for (const topic of topics) {
      for (const principal of principals) {
        expect(scopesReceiving(topic).includes(shareScope(principal)), `${principal.kind} ${topic}`).toBe(
          mayReceive(principal, topic),
        );
      }
    }
  });
});

const message = (topic: string, payload = "x", qos: SharedMessage["qos"] = 1): SharedMessage => ({
  topic,
  payload: Buffer.from(payload),
  qos,
});

const topics = (entries: { message: SharedMessage }[]) => entries.map((entry) => entry.message.topic);

const redis = await redisForStores();
const pubsubs: RedisPubSub[] = [];
afterAll(async () => {
  for (const pubsub of pubsubs) await pubsub.close();
});

const stores: [string, boolean, (maxMessages: number) => SharedQueue][] = [
  ["in this process", false, (maxMessages) => new LocalSharedQueue(new LocalPubSub(), maxMessages)],
  [
    "in Redis",
    redis.skip,
    (maxMessages) => new RedisSharedQueue(redis.redis, redis.prefix(), new LocalPubSub(), maxMessages),
  ],
];

describe.each(stores)("shared queue %s", (_, skip, open) => {
  const group = (scope: string, filter: string) => ({ id: groupId(scope, { share: "g", filter }), scope, filter });

  it.skipIf(skip)("appends a message to each group of the scopes whose filter it matches, once", async () => {
    const queue = open(100);
    const plain = group("admin", "a/#");
    const other = group("anonymous", "a/+");
    const later = Date.now() + 60_000;
    await queue.join(plain, "m1", later);
    await queue.join(plain, "m2", later);
    await queue.join(other, "m3", later);
    expect(await queue.hasGroups("admin")).toBe(true);
    expect(await queue.hasGroups("viewer:x")).toBe(false);
    await queue.append(["admin"], [message("a/1"), message("b/1"), message("a/2/3")]);
    await queue.append(["anonymous"], [message("a/4", "payload \u0000 binary", 0)]);
    const read = await queue.read(plain.id, "broker-1", 10);
    expect(topics(read)).toEqual(["a/1", "a/2/3"]);
    expect(await queue.read(plain.id, "broker-2", 10)).toEqual([]);
    const [anonymous] = await queue.read(other.id, "broker-1", 10);
    expect(anonymous?.message).toMatchObject({ topic: "a/4", qos: 0 });
    expect(anonymous?.message.payload.toString()).toBe("payload \u0000 binary");
  });

  it.skipIf(skip)("matches filters in the queue as the broker does", async () => {
    const queue = open(100);
    for (const [i, [filter]] of MATCHING.entries())
      await queue.join(group(`scope-${i}`, filter), "m", Date.now() + 60_000);
    for (const [i, [filter, topic, expected]] of MATCHING.entries()) {
      const scope = `scope-${i}`;
      await queue.append([scope], [message(topic)]);
      const read = await queue.read(group(scope, filter).id, "broker-1", 10);
      expect(read.length, `${filter} ${topic}`).toBe(expected ? 1 : 0);
    }
  });

  it.skipIf(skip)("keeps an entry until it is acknowledged, and gives a released one to the next reader", async () => {
    const queue = open(100);
    const spec = group("admin", "#");
    await queue.join(spec, "m1", Date.now() + 60_000);
    await queue.append(["admin"], [message("a"), message("b"), message("c")]);
    const first = await queue.read(spec.id, "broker-1", 2);
    expect(topics(first)).toEqual(["a", "b"]);
    await queue.ack(spec.id, [first[0]?.id as string]);
    await queue.release(spec.id, [first[1]?.id as string]);
    expect(topics(await queue.read(spec.id, "broker-2", 10)).sort()).toEqual(["b", "c"]);
    expect(await queue.read(spec.id, "broker-1", 10)).toEqual([]);
  });

  it.skipIf(skip)("refuses and counts what a full group cannot hold; acknowledged entries make room", async () => {
    const queue = open(2);
    const spec = group("admin", "#");
    await queue.join(spec, "m1", Date.now() + 60_000);
    expect(await queue.append(["admin"], [message("a"), message("b"), message("c")])).toEqual({ dropped: 1 });
    const read = await queue.read(spec.id, "broker-1", 10);
    await queue.ack(
      spec.id,
      read.map((entry) => entry.id),
    );
    expect(await queue.append(["admin"], [message("d")])).toEqual({ dropped: 0 });
  });

  it.skipIf(skip)("ends a group with its last member, and a member that stays away past its time", async () => {
    const queue = open(100);
    const spec = group("admin", "#");
    await queue.join(spec, "m1", Date.now() + 60_000);
    await queue.join(spec, "m2", Date.now() + 60_000);
    await queue.leave(spec.id, "m1");
    expect(await queue.hasGroups("admin")).toBe(true);
    await queue.leave(spec.id, "m2");
    expect(await queue.hasGroups("admin")).toBe(false);
    expect(await queue.append(["admin"], [message("a")])).toEqual({ dropped: 0 });

    await queue.join(spec, "away", Date.now() + 1000);
    await queue.sweep(Date.now());
    expect(await queue.hasGroups("admin")).toBe(true);
    await queue.sweep(Date.now() + 2000);
    expect(await queue.hasGroups("admin")).toBe(false);
  });
});

describe.skipIf(redis.skip)("shared queue in Redis, brokers that stop", () => {
  it("gives what a broker held pending to the others once its liveness lapses, and nothing while it renews", async () => {
    const queue = new RedisSharedQueue(redis.redis, redis.prefix(), new LocalPubSub(), 100);
    const spec = { id: groupId("admin", { share: "g", filter: "#" }), scope: "admin", filter: "#" };
    await queue.join(spec, "m1", Date.now() + 60_000);
    await queue.heartbeat("alive", 60_000);
    await queue.heartbeat("dying", 100);
    await queue.append(["admin"], [message("a"), message("b"), message("c")]);
    expect(topics(await queue.read(spec.id, "alive", 1))).toEqual(["a"]);
    expect(topics(await queue.read(spec.id, "dying", 2))).toEqual(["b", "c"]);
    expect(await queue.sweep(Date.now())).toEqual({ released: 0 });
    await new Promise((resolve) => setTimeout(resolve, 200));
    expect(await queue.sweep(Date.now())).toEqual({ released: 2 });
    expect(topics(await queue.read(spec.id, "alive", 10))).toEqual(["b", "c"]);
  });

  it("tells every process at once that a scope has a new group, though each remembers the answer a second", async () => {
    const prefix = redis.prefix();
    const open = () => {
      const pubsub = new RedisPubSub(redisConnector({ url: REDIS_URL }), prefix, pino({ level: "silent" }));
      pubsubs.push(pubsub);
      return new RedisSharedQueue(redis.redis, prefix, pubsub, 100);
    };
    const [worker, broker] = [open(), open()];
    const spec = { id: groupId("viewer:t", { share: "g", filter: "#" }), scope: "viewer:t", filter: "#" };
    expect(await worker.hasGroups("viewer:t")).toBe(false);
    await broker.join(spec, "m1", Date.now() + 60_000);
    // Well within the second the worker would otherwise go on answering from what it remembered.
    await eventually(async () => ((await worker.hasGroups("viewer:t")) ? true : undefined), 300);
  });
});
