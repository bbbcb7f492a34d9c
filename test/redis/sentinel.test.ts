import { Redis } from "ioredis";
import { describe, expect, it } from "vitest";
import { bearer, createTenant, eventually, metricValue, request } from "../helpers/http.ts";
import { connect, connectAgent, inbox, sleep } from "../helpers/mqtt.ts";
import { distributedNodes } from "../helpers/nodes.ts";
import { startSentinelGroup } from "../helpers/redis-sentinel.ts";
import { clientOptions, makeTestCertificate, startOwnRedis } from "../helpers/redis-server.ts";
import { createTestDatabase, distributedUnavailable, tempDir } from "../helpers/services.ts";

const skip = Boolean(await distributedUnavailable());
const ADMIN_TOKEN = `admin-${"s".repeat(40)}`;
const { cleanups, startNode, track } = distributedNodes(ADMIN_TOKEN);

/** Every Redis connection a node of every role opens, by the name it gives itself. */
const CONNECTIONS = [
  "queue",
  "coordination",
  "pubsub-publisher",
  "pubsub-subscriber",
  "broker-sessions",
  "broker-emitter-publisher",
  "broker-emitter-subscriber",
  "worker",
].map((role) => `edge-ingest:${role}`);

async function connectionNames(port: number, secure: Parameters<typeof clientOptions>[0] = {}): Promise<string[]> {
  const admin = new Redis(port, "127.0.0.1", clientOptions(secure));
  try {
    const list = (await admin.client("LIST")) as string;
    return [...list.matchAll(/ name=(\S+)/g)].map(([, name]) => name as string);
  } finally {
    admin.disconnect();
  }
}

/**
 * Waits until every connection is on the promoted server. The sentinels demote the old primary (and
 * cut its clients) only when they next look at it, about 10 s on; a connection still there
 * meanwhile would write what the demotion then discards. So every connection must move when the
 * sentinels announce the new primary: within 5 s.
 */
async function everyConnectionMovesTo(port: number, secure: Parameters<typeof clientOptions>[0] = {}): Promise<void> {
  await eventually(async () => {
    const names = await connectionNames(port, secure);
    return CONNECTIONS.every((name) => names.includes(name)) ? true : undefined;
  }, 5_000);
}

/** Every Pub/Sub channel with its subscriber count, and the pattern count, on the server at `port`. */
async function subscriptions(port: number): Promise<string[]> {
  const admin = new Redis(port, "127.0.0.1");
  try {
    const channels = (await admin.pubsub("CHANNELS")) as string[];
    const counts = channels.length > 0 ? ((await admin.pubsub("NUMSUB", ...channels)) as (string | number)[]) : [];
    const numpat = await admin.pubsub("NUMPAT");
    const pairs = channels.map((_, i) => `${counts[2 * i]} ${counts[2 * i + 1]}`);
    return [...pairs.sort(), `patterns ${numpat}`];
  } finally {
    admin.disconnect();
  }
}

async function storedValues(url: string, token: string, name: string): Promise<number[]> {
  const { body } = await request(`${url}/api/v1/metrics?name=${name}`, { auth: bearer(token) });
  return (body.items as { value: number }[]).map((item) => item.value).sort();
}

describe.skipIf(skip)("Redis behind sentinels", () => {
  it("follows a failover with every connection: publishes, routing, retained messages, presence", async () => {
    const group = await startSentinelGroup({ replicas: 2 });
    cleanups.push(() => group.remove());
    const db = await createTestDatabase();
    cleanups.push(db.drop);
    const env = {
      DATABASE_URL: db.url,
      // Only the scheme (and a password or database, had it one) counts: the sentinels give the address.
      REDIS_URL: "redis://unused-with-sentinels",
      REDIS_SENTINELS: group.sentinelList,
      REDIS_PERSISTENCE: "aof",
      REDIS_MIN_REPLICAS: "1",
      MQTT_ALLOW_ANONYMOUS: "true",
    };
    const app = await startNode(env);
    const other = await startNode({ ...env, ROLES: "broker" });
    const tenant = await createTenant(app.httpUrl, ADMIN_TOKEN);
    const here = `mqtt://127.0.0.1:${app.mqttPorts?.tcp}`;
    const there = `mqtt://127.0.0.1:${other.mqttPorts?.tcp}`;
    const agent = track(await connectAgent(there, tenant.agent));
    const viewer = track(await connect(here, { username: "viewer", password: tenant.viewerToken }));
    const feed = inbox(viewer);
    await viewer.subscribeAsync(`metrics/${tenant.tenantId}/#`, { qos: 1 });
    const plain = track(await connect(here));
    const routed = inbox(plain);
    await plain.subscribeAsync("plain/#", { qos: 1 });
    const sender = track(await connect(there, { reconnectPeriod: 100 }));
    const topic = `metrics/${tenant.tenantId}/${tenant.agent.agentId}/failover`;

    await agent.publishAsync(topic, JSON.stringify({ value: 1, dedupe_id: "f-1" }), { qos: 1 });
    await sender.publishAsync("plain/before", "kept", { qos: 1, retain: true });
    await feed.waitFor(1, topic);
    await routed.waitFor(1, "plain/before");
    const first = await group.primaryPort();
    expect(await connectionNames(first)).toEqual(expect.arrayContaining(CONNECTIONS));
    const subscribed = await subscriptions(first);

    const promoted = await group.failover();
    await everyConnectionMovesTo(promoted);
    // Every subscription is made again there: Redis Pub/Sub keeps nothing, so a message published
    // before it was would be lost (docs/redis.md).
    await eventually(async () => ((await subscriptions(promoted)).join() === subscribed.join() ? true : undefined));
    // None is left on the demoted primary (now a replica of the new one).
    await eventually(async () => {
      const names = await connectionNames(first);
      return CONNECTIONS.some((name) => names.includes(name)) ? undefined : true;
    }, 20_000);

    await agent.publishAsync(topic, JSON.stringify({ value: 2, dedupe_id: "f-2" }), { qos: 1 });
    await sender.publishAsync("plain/after", "routed", { qos: 1 });
    await feed.waitFor(2, topic, 20_000);
    await routed.waitFor(1, "plain/after");
    const stored = await eventually(async () => {
      const values = await storedValues(app.httpUrl, tenant.viewerToken, "failover");
      return values.length === 2 ? values : undefined;
    });
    expect(stored).toEqual([1, 2]);
    // Retained before the failover, replicated, and read from the new primary by a new subscriber.
    const late = track(await connect(there));
    const retained = inbox(late);
    await late.subscribeAsync("plain/before", { qos: 1 });
    expect((await retained.waitFor(1, "plain/before"))[0]?.payload).toBe("kept");
    const { body } = await request(`${app.httpUrl}/api/v1/agents`, { auth: bearer(tenant.viewerToken) });
    expect(body.items.find((a: { agent_id: string }) => a.agent_id === tenant.agent.agentId)?.connected).toBe(true);
  }, 90_000);

  it("follows a failover with passwords and TLS on the data nodes and the sentinels", async () => {
    const dir = await tempDir();
    cleanups.push(dir.remove);
    const secure = { password: "p@ss word/1", tls: await makeTestCertificate(dir.dir) };
    const group = await startSentinelGroup({ ...secure });
    cleanups.push(() => group.remove());
    const db = await createTestDatabase();
    cleanups.push(db.drop);
    const app = await startNode({
      DATABASE_URL: db.url,
      REDIS_URL: `rediss://:${encodeURIComponent(secure.password)}@unused-with-sentinels`,
      REDIS_SENTINELS: group.sentinelList,
      REDIS_SENTINEL_PASSWORD: secure.password,
      REDIS_SENTINEL_TLS: "true",
      REDIS_TLS_CA_FILE: secure.tls.certFile,
      REDIS_PERSISTENCE: "aof",
      REDIS_MIN_REPLICAS: "1",
    });
    const tenant = await createTenant(app.httpUrl, ADMIN_TOKEN);
    const agent = track(await connectAgent(`mqtt://127.0.0.1:${app.mqttPorts?.tcp}`, tenant.agent));
    const topic = `metrics/${tenant.tenantId}/${tenant.agent.agentId}/secure`;
    await agent.publishAsync(topic, JSON.stringify({ value: 1, dedupe_id: "s-1" }), { qos: 1 });
    await everyConnectionMovesTo(await group.failover(), secure);
    await agent.publishAsync(topic, JSON.stringify({ value: 2, dedupe_id: "s-2" }), { qos: 1 });
    const stored = await eventually(async () => {
      const values = await storedValues(app.httpUrl, tenant.viewerToken, "secure");
      return values.length === 2 ? values : undefined;
    });
    expect(stored).toEqual([1, 2]);
  }, 90_000);

  it("holds acknowledgements while fewer replicas than REDIS_MIN_REPLICAS confirm, and stores the resend once", async () => {
    const primary = await startOwnRedis({ appendonly: true });
    cleanups.push(() => primary.remove());
    const replica = await startOwnRedis({ appendonly: true, args: ["--replicaof", "127.0.0.1", String(primary.port)] });
    cleanups.push(() => replica.remove());
    const db = await createTestDatabase();
    cleanups.push(db.drop);
    const app = await startNode({
      DATABASE_URL: db.url,
      REDIS_URL: primary.url,
      REDIS_PERSISTENCE: "aof",
      REDIS_MIN_REPLICAS: "1",
      REDIS_REPLICA_TIMEOUT_MS: "1000",
    });
    const tenant = await createTenant(app.httpUrl, ADMIN_TOKEN);
    const url = `mqtt://127.0.0.1:${app.mqttPorts?.tcp}`;
    const agent = track(await connectAgent(url, tenant.agent));
    const v5 = track(
      await connect(url, {
        protocolVersion: 5,
        clientId: "v5-agent",
        username: tenant.agent.username,
        password: tenant.agent.password,
      }),
    );
    const topic = `metrics/${tenant.tenantId}/${tenant.agent.agentId}/replicated`;
    await agent.publishAsync(topic, JSON.stringify({ value: 1, dedupe_id: "r-1" }), { qos: 1 });

    replica.pause();
    let acknowledged = false;
    const published = agent
      .publishAsync(topic, JSON.stringify({ value: 2, dedupe_id: "r-2" }), { qos: 1 })
      .then(() => (acknowledged = true));
    const http = await request(`${app.httpUrl}/api/v1/metrics`, {
      auth: bearer(tenant.ingestToken),
      body: { agent_id: tenant.agent.agentId, metrics: [{ name: "replicated", value: 3, dedupe_id: "r-3" }] },
    });
    expect([http.status, http.body.error.code]).toEqual([503, "unavailable"]);
    // MQTT 5 is told why its connection ends: server busy.
    const told = new Promise<number | undefined>((resolve) =>
      v5.once("disconnect", (packet) => resolve(packet.reasonCode)),
    );
    v5.publish(topic, JSON.stringify({ value: 4, dedupe_id: "r-4" }), { qos: 1 });
    expect(await told).toBe(0x89);
    await sleep(1000);
    expect(acknowledged).toBe(false);
    expect(await metricValue(app.httpUrl, "edge_ingest_mqtt_unacknowledged_total")).toBeGreaterThanOrEqual(2);

    replica.resume();
    await published;
    // The primary had the jobs all along: refused acknowledgements are resent, never stored twice.
    const stored = await eventually(async () => {
      const values = await storedValues(app.httpUrl, tenant.viewerToken, "replicated");
      return values.length === 4 ? values : undefined;
    });
    await sleep(500);
    expect(stored).toEqual([1, 2, 3, 4]);
    expect(await storedValues(app.httpUrl, tenant.viewerToken, "replicated")).toEqual([1, 2, 3, 4]);
  }, 60_000);
});
