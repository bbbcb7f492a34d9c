import type { IClientOptions, IConnackPacket, MqttClient } from "mqtt";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startTestApp, type TestApp } from "../helpers/app.ts";
import { createTenant, metricValue, request, type TenantFixture } from "../helpers/http.ts";
import { connect, sleep } from "../helpers/mqtt.ts";
import { distributedNodes } from "../helpers/nodes.ts";
import { distributedUnavailable } from "../helpers/services.ts";

const connackOf = (client: MqttClient) => (client as unknown as { connackPacket: IConnackPacket }).connackPacket;

/** Connects, reads whether the broker had a session for the client, and disconnects cleanly. */
async function sessionPresent(
  url: string,
  options: IClientOptions,
): Promise<{ present: boolean; connack: IConnackPacket }> {
  const client = await connect(url, options);
  const connack = connackOf(client);
  await client.endAsync();
  return { present: Boolean(connack.sessionPresent), connack };
}

describe("persistent sessions expire", () => {
  let t: TestApp;
  let a: TenantFixture;
  let url: string;

  beforeAll(async () => {
    t = await startTestApp("embedded", { MQTT_MAX_SESSION_EXPIRY_SECONDS: "2" });
    a = await createTenant(t.url, t.adminToken, "pump-1");
    url = `mqtt://127.0.0.1:${t.app.mqttPorts?.tcp}`;
  });
  afterAll(() => t?.cleanup());

  const agent = (options: IClientOptions) => ({ username: a.agent.username, password: a.agent.password, ...options });

  it("keeps a 3.1.1 persistent session while its client comes back within MQTT_MAX_SESSION_EXPIRY_SECONDS, and removes it after", async () => {
    const persistent = agent({ clientId: "v311-device", clean: false });
    expect((await sessionPresent(url, persistent)).present).toBe(false);
    await sleep(500);
    expect((await sessionPresent(url, persistent)).present).toBe(true);
    const expiredBefore = await metricValue(t.url, "edge_ingest_mqtt_sessions_expired_total");
    await sleep(3500);
    expect((await sessionPresent(url, persistent)).present).toBe(false);
    expect(await metricValue(t.url, "edge_ingest_mqtt_sessions_expired_total")).toBeGreaterThan(expiredBefore);
  });

  it("removes an expired session's queued messages, which a session still kept delivers", async () => {
    const admin = (clientId: string) => ({ username: "admin", password: t.adminToken, clientId, clean: false });
    /** A persistent subscriber that leaves; one QoS 1 message is queued for it while it is away. */
    const queueFor = async (clientId: string) => {
      const subscriber = await connect(url, admin(clientId));
      await subscriber.subscribeAsync(`plain/${clientId}`, { qos: 1 });
      await subscriber.endAsync();
      const publisher = await connect(url, { username: "admin", password: t.adminToken });
      await publisher.publishAsync(`plain/${clientId}`, "while away", { qos: 1 });
      await publisher.endAsync();
    };
    const delivered = async (clientId: string) => {
      const back = await connect(url, admin(clientId));
      const received: string[] = [];
      back.on("message", (_topic, payload) => received.push(payload.toString()));
      await sleep(500);
      await back.endAsync();
      return received;
    };
    await queueFor("kept");
    expect(await delivered("kept")).toEqual(["while away"]);
    await queueFor("expired");
    await sleep(3500);
    expect(await delivered("expired")).toEqual([]);
  });

  it("times an MQTT 5 Session Expiry Interval, granting at most the limit, which the CONNACK says", async () => {
    const short = agent({
      protocolVersion: 5,
      clientId: "v5-short",
      clean: false,
      properties: { sessionExpiryInterval: 1 },
    });
    await sessionPresent(url, short);
    expect((await sessionPresent(url, short)).present).toBe(true);
    await sleep(2500);
    expect((await sessionPresent(url, short)).present).toBe(false);

    const long = agent({
      protocolVersion: 5,
      clientId: "v5-long",
      clean: false,
      properties: { sessionExpiryInterval: 3600 },
    });
    const { connack } = await sessionPresent(url, long);
    expect(connack.properties?.sessionExpiryInterval).toBe(2);
  });

  it("ends an MQTT 5 session with its connection when the interval is 0, and starts afresh on Clean Start", async () => {
    const none = agent({
      protocolVersion: 5,
      clientId: "v5-none",
      clean: false,
      properties: { sessionExpiryInterval: 0 },
    });
    await sessionPresent(url, none);
    expect((await sessionPresent(url, none)).present).toBe(false);

    const kept = { protocolVersion: 5 as const, clientId: "v5-restart", properties: { sessionExpiryInterval: 2 } };
    await sessionPresent(url, agent({ ...kept, clean: false }));
    expect((await sessionPresent(url, agent({ ...kept, clean: false }))).present).toBe(true);
    // Clean Start: the old session goes, and the new one outlives the connection.
    expect((await sessionPresent(url, agent({ ...kept, clean: true }))).present).toBe(false);
    expect((await sessionPresent(url, agent({ ...kept, clean: false }))).present).toBe(true);
  });

  it("shows the sessions waiting for their client in /metrics", async () => {
    await sessionPresent(url, agent({ clientId: "waiting-1", clean: false }));
    const text = (await request<string>(`${t.url}/metrics`)).body;
    expect(text).toMatch(/edge_ingest_mqtt_sessions_waiting [1-9]/);
  });
});

const skipDistributed = Boolean(await distributedUnavailable());
const ADMIN_TOKEN = `admin-${"s".repeat(40)}`;
const { startNode, sharedBackends } = distributedNodes(ADMIN_TOKEN);

describe.skipIf(skipDistributed)("persistent sessions expire across brokers", () => {
  it("keeps a session whose client came back on another broker, and removes one that stays away, once", async () => {
    const shared = await sharedBackends();
    const first = await startNode({ ...shared, MQTT_MAX_SESSION_EXPIRY_SECONDS: "2" });
    const second = await startNode({ ...shared, ROLES: "broker", MQTT_MAX_SESSION_EXPIRY_SECONDS: "2" });
    const tenant = await createTenant(first.httpUrl, ADMIN_TOKEN);
    const urlOf = (app: typeof first) => `mqtt://127.0.0.1:${app.mqttPorts?.tcp}`;
    const options = { username: tenant.agent.username, password: tenant.agent.password, clean: false };

    // On the first broker, then taken over on the second (the first broker's disconnect is stale):
    // past the expiry, the session on the second is still there.
    const onFirst = await connect(urlOf(first), { ...options, clientId: "roaming" });
    const onSecond = await connect(urlOf(second), { ...options, clientId: "roaming" });
    await sleep(3000);
    await onSecond.endAsync();
    await onFirst.endAsync(true);
    expect((await sessionPresent(urlOf(first), { ...options, clientId: "roaming" })).present).toBe(true);

    // Away past the expiry: gone, whichever broker swept it.
    await sessionPresent(urlOf(second), { ...options, clientId: "away" });
    await sleep(3500);
    expect((await sessionPresent(urlOf(first), { ...options, clientId: "away" })).present).toBe(false);
    const expired =
      (await metricValue(first.httpUrl, "edge_ingest_mqtt_sessions_expired_total")) +
      (await metricValue(second.httpUrl, "edge_ingest_mqtt_sessions_expired_total"));
    // The roaming session too, once its client left the second broker for good; each removed once.
    expect(expired).toBe(2);
  });
});
