import { Redis } from "ioredis";
import pg from "pg";
import { describe, expect, it } from "vitest";
import type { RunningApp } from "../../src/app.ts";
import { bearer, createTenant, eventually, metricValue, request } from "../helpers/http.ts";
import { connackOf, connect, connectAgent, inbox, sleep } from "../helpers/mqtt.ts";
import { closeWithin, distributedNodes } from "../helpers/nodes.ts";
import { type OwnRedis, startOwnRedis } from "../helpers/redis-server.ts";
import { createTestDatabase, distributedUnavailable } from "../helpers/services.ts";

const skip = Boolean(await distributedUnavailable());
const ADMIN_TOKEN = `admin-${"y".repeat(40)}`;
const { cleanups, startNode, sharedBackends, startPair, track } = distributedNodes(ADMIN_TOKEN);

/** Every role on a redis-server of the test's own, which it may stop. */
async function nodeOnOwnRedis(
  env: Record<string, string> = {},
): Promise<{ redis: OwnRedis; app: RunningApp; databaseUrl: string }> {
  const redis = await startOwnRedis();
  cleanups.push(() => redis.remove());
  const db = await createTestDatabase();
  cleanups.push(db.drop);
  return { redis, app: await startNode({ DATABASE_URL: db.url, REDIS_URL: redis.url, ...env }), databaseUrl: db.url };
}

describe.skipIf(skip)("distributed broker", () => {
  it("withholds the PUBACK while the queue is down, and stores the resent message once when it is back", async () => {
    const { redis, app } = await nodeOnOwnRedis();
    const tenant = await createTenant(app.httpUrl, ADMIN_TOKEN);
    const agent = track(await connectAgent(`mqtt://127.0.0.1:${app.mqttPorts?.tcp}`, tenant.agent));

    await redis.stop();
    let acknowledged = false;
    const published = agent
      .publishAsync(
        `metrics/${tenant.tenantId}/${tenant.agent.agentId}/outage`,
        JSON.stringify({ value: 1, dedupe_id: "resent-1" }),
        { qos: 1 },
      )
      .then(() => (acknowledged = true));
    await sleep(1000);
    expect(acknowledged).toBe(false);

    await redis.start();
    await published;
    const rows = await eventually(async () => {
      const { body } = await request(`${app.httpUrl}/api/v1/metrics?name=outage`, { auth: bearer(tenant.viewerToken) });
      return body.items.length > 0 ? body.items : undefined;
    });
    await sleep(500);
    const { body } = await request(`${app.httpUrl}/api/v1/metrics?name=outage`, { auth: bearer(tenant.viewerToken) });
    expect(rows).toHaveLength(1);
    expect(body.items).toHaveLength(1);
    expect(body.items[0]).toMatchObject({ value: 1, dedupe_id: "resent-1" });
    const metrics = (await request<string>(`${app.httpUrl}/metrics`)).body;
    expect(metrics).toMatch(/edge_ingest_mqtt_unacknowledged_total [1-9]/);
  });

  it("closes while Redis is down, a departed client's session writes still waiting for it", async () => {
    const { redis, app } = await nodeOnOwnRedis();
    const tenant = await createTenant(app.httpUrl, ADMIN_TOKEN);
    const login = { username: tenant.agent.username, password: tenant.agent.password };
    const agent = await connect(`mqtt://127.0.0.1:${app.mqttPorts?.tcp}`, login);
    const unhandled: unknown[] = [];
    const onUnhandled = (reason: unknown) => unhandled.push(reason);
    process.on("unhandledRejection", onUnhandled);
    cleanups.push(async () => {
      process.off("unhandledRejection", onUnhandled);
    });

    await redis.stop();
    // The broker forgets the client's will as it goes: a Redis write that cannot happen now.
    await agent.endAsync();
    await sleep(200);
    await closeWithin(app, 30_000);
    // Rejections surface after the connection's queue is flushed.
    await sleep(100);
    expect(unhandled).toEqual([]);
  });

  it("stops acknowledging while the queue is deeper than QUEUE_MAX_DEPTH, and resumes as workers drain it", async () => {
    const shared = await sharedBackends();
    // No worker yet: every submission stays queued.
    const broker = await startNode({ ...shared, ROLES: "api,broker", QUEUE_MAX_DEPTH: "2", MQTT_BATCH_LINGER_MS: "0" });
    const tenant = await createTenant(broker.httpUrl, ADMIN_TOKEN);
    const agent = track(
      await connect(`mqtt://127.0.0.1:${broker.mqttPorts?.tcp}`, {
        username: tenant.agent.username,
        password: tenant.agent.password,
      }),
    );
    const publish = (n: number) =>
      agent.publishAsync(`metrics/${tenant.tenantId}/${tenant.agent.agentId}/deep`, String(n), { qos: 1 });
    await publish(1);
    await publish(2);
    await sleep(600);
    let acknowledged = false;
    const third = publish(3).then(() => (acknowledged = true));
    await sleep(1500);
    expect(acknowledged).toBe(false);

    await startNode({ ...shared, ROLES: "worker" });
    await third;
    const stored = await eventually(async () => {
      const { body } = await request(`${broker.httpUrl}/api/v1/metrics?name=deep`, {
        auth: bearer(tenant.viewerToken),
      });
      return body.items.length === 3 ? body.items : undefined;
    });
    expect(stored.map((r: { value: number }) => r.value).sort()).toEqual([1, 2, 3]);
  });

  it("runs two brokers on one Redis: messages cross between them and a persistent session moves", async () => {
    const [first, second] = await startPair();
    const tenant = await createTenant(first.httpUrl, ADMIN_TOKEN);
    const url = (app: RunningApp) => `mqtt://127.0.0.1:${app.mqttPorts?.tcp}`;
    const topic = (metric: string) => `metrics/${tenant.tenantId}/${tenant.agent.agentId}/${metric}`;
    const feedback = `ingest/${tenant.tenantId}/${tenant.agent.agentId}/errors`;
    const agentLogin = { username: tenant.agent.username, password: tenant.agent.password };

    // Live delivery: agent on the first broker, viewer on the second.
    const viewer = track(await connect(url(second), { username: "viewer", password: tenant.viewerToken }));
    const seen = inbox(viewer);
    await viewer.subscribeAsync(`metrics/${tenant.tenantId}/#`);
    const agent = track(await connect(url(first), agentLogin));
    await agent.publishAsync(topic("across"), "1", { qos: 1 });
    const [live] = await seen.waitFor(1, topic("across"));
    expect(JSON.parse(live?.payload ?? "").value).toBe(1);

    // A persistent session of the agent follows its feedback topic, then goes away.
    const session = { ...agentLogin, clientId: "pump-console", clean: false };
    const console1 = await connect(url(first), session);
    await console1.subscribeAsync(feedback, { qos: 1 });
    await console1.endAsync();
    // What it misses at QoS 1 waits in its session, in Redis.
    await agent.publishAsync(topic("broken"), "not json", { qos: 1 });
    await sleep(300);

    // It comes back on the other broker and finds its session, and the message, there.
    const console2 = track(await connect(url(second), session));
    const missed = inbox(console2);
    const [message] = await missed.waitFor(1, feedback);
    expect(JSON.parse(message?.payload ?? "")).toMatchObject({ topic: topic("broken"), reason: "bad_json" });
  });

  it("disconnects a revoked agent on another broker", async () => {
    const [api, broker] = await startPair();
    const tenant = await createTenant(api.httpUrl, ADMIN_TOKEN);
    const agent = track(
      await connect(`mqtt://127.0.0.1:${broker.mqttPorts?.tcp}`, {
        username: tenant.agent.username,
        password: tenant.agent.password,
      }),
    );
    const gone = new Promise<void>((resolve) => agent.once("close", () => resolve()));
    const revoked = await request(`${api.httpUrl}/api/v1/admin/credentials/${tenant.agent.username}`, {
      method: "DELETE",
      auth: bearer(ADMIN_TOKEN),
    });
    expect(revoked.status).toBe(204);
    await gone;
    expect(agent.connected).toBe(false);
    expect(await metricValue(broker.httpUrl, "edge_ingest_mqtt_forced_disconnects_total", { reason: "revoked" })).toBe(
      1,
    );
    // And it cannot come back, on either broker.
    const login = { username: tenant.agent.username, password: tenant.agent.password };
    for (const node of [api, broker]) expect(await connackOf(`mqtt://127.0.0.1:${node.mqttPorts?.tcp}`, login)).toBe(4);
  });

  it("disconnects an agent whose revocation was announced while its subscriptions were lost, once they are back", async () => {
    const { redis, app, databaseUrl } = await nodeOnOwnRedis();
    const tenant = await createTenant(app.httpUrl, ADMIN_TOKEN);
    const agent = track(await connectAgent(`mqtt://127.0.0.1:${app.mqttPorts?.tcp}`, tenant.agent));
    const gone = new Promise<void>((resolve) => agent.once("close", () => resolve()));
    // Revoked with no announcement heard, as when it was made while nobody's subscription was up.
    const db = new pg.Client({ connectionString: databaseUrl });
    await db.connect();
    await db.query("UPDATE credentials SET revoked_at = now() WHERE username = $1", [tenant.agent.username]);
    await db.end();
    await sleep(300);
    expect(agent.connected).toBe(true);
    // The subscriptions drop and come back: the process asks what was revoked meanwhile.
    const admin = new Redis(redis.url);
    await admin.call("CLIENT", "KILL", "TYPE", "pubsub");
    admin.disconnect();
    await gone;
    expect(await metricValue(app.httpUrl, "edge_ingest_mqtt_forced_disconnects_total", { reason: "revoked" })).toBe(1);
  });

  it("lists and counts every connection that outlived a Redis freeze longer than the presence lease", async () => {
    const { redis, app } = await nodeOnOwnRedis({ MQTT_PRESENCE_LEASE_MS: "3000", TENANT_MAX_CONNECTIONS: "2" });
    const tenant = await createTenant(app.httpUrl, ADMIN_TOKEN);
    const tcp = `mqtt://127.0.0.1:${app.mqttPorts?.tcp}`;
    const login = { username: tenant.agent.username, password: tenant.agent.password };
    // Long keepalives: neither client notices the freeze or reconnects.
    track(await connect(tcp, { ...login, keepalive: 300 }));
    track(await connect(tcp, { username: "viewer", password: tenant.viewerToken, keepalive: 300 }));
    const clients = async () =>
      (
        await request<{ kind: string }[]>(`${app.httpUrl}/api/v1/admin/tenants/${tenant.tenantId}/clients`, {
          auth: bearer(ADMIN_TOKEN),
        })
      ).body
        .map((client) => client.kind)
        .sort();
    expect(await clients()).toEqual(["agent", "viewer"]);

    redis.pause();
    await sleep(4500);
    redis.resume();
    // Within a third of a lease both are back: listed, and counted against the tenant's 2.
    await eventually(async () => ((await clients()).length === 2 ? true : undefined), 3000);
    expect(await clients()).toEqual(["agent", "viewer"]);
    expect(await connackOf(tcp, { ...login, clientId: "a-third" })).toBe(3);
  }, 30_000);
});
