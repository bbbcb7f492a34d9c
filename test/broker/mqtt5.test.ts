import { execFile } from "node:child_process";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import type { IConnackPacket, MqttClient } from "mqtt";
import type { IPubackPacket, Packet } from "mqtt-packet";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { MQTT5, REFUSALS } from "../../src/ingest/refusals.ts";
import { startTestApp, type TestApp } from "../helpers/app.ts";
import { bearer, createTenant, eventually, metricValue, request, type TenantFixture } from "../helpers/http.ts";
import { connackOf, connect, disconnectCode, inbox, pubackCode, sleep, subscribeGrants } from "../helpers/mqtt.ts";
import { pythonWith } from "../helpers/python.ts";
import { type RawMqttClient, rawConnect, waitFor } from "../helpers/raw-mqtt.ts";

// What MQTT 5.0 adds to the rules every version follows (those run for both in broker.test.ts):
// the properties the broker offers, and a reason code for each refusal.
const run = promisify(execFile);
const PAHO = fileURLToPath(new URL("./paho_v5.py", import.meta.url));
const python = await pythonWith(["paho-mqtt>=2,<3"]);

describe("MQTT 5.0", () => {
  let t: TestApp;
  let a: TenantFixture;
  let b: TenantFixture;
  let tcp: string;
  let port: number;
  const clients: MqttClient[] = [];
  const raws: RawMqttClient[] = [];

  beforeAll(async () => {
    t = await startTestApp("embedded", {
      MQTT_KEEPALIVE_LIMIT_SECONDS: "30",
      MQTT_RECEIVE_MAXIMUM: "4",
      MQTT_TOPIC_ALIAS_MAXIMUM: "8",
      MQTT_MAX_CLIENT_ID_LENGTH: "32",
      MQTT_MAX_RETAINED_MESSAGES_PER_PRINCIPAL: "1",
      MQTT_FEEDBACK_INTERVAL_MS: "50",
    });
    a = await createTenant(t.url, t.adminToken, "pump-1");
    b = await createTenant(t.url, t.adminToken, "pump-2");
    port = t.app.mqttPorts?.tcp as number;
    tcp = `mqtt://127.0.0.1:${port}`;
  });
  afterEach(async () => {
    await Promise.all(clients.splice(0).map((c) => c.endAsync(true).catch(() => undefined)));
    for (const raw of raws.splice(0)) raw.socket.destroy();
  });
  afterAll(() => t?.cleanup());

  const asAgent = async (fixture: TenantFixture, options = {}) => {
    const client = await connect(tcp, {
      protocolVersion: 5,
      username: fixture.agent.username,
      password: fixture.agent.password,
      ...options,
    });
    clients.push(client);
    return client;
  };
  const rawAgent = async (fixture: TenantFixture, options: Parameters<typeof rawConnect>[1] = {}) => {
    const raw = await rawConnect(port, {
      protocolVersion: 5,
      username: fixture.agent.username,
      password: fixture.agent.password,
      ...options,
    });
    raws.push(raw);
    return raw;
  };
  const topicOf = (fixture: TenantFixture, metric: string) =>
    `metrics/${fixture.tenantId}/${fixture.agent.agentId}/${metric}`;
  const stored = async (fixture: TenantFixture, name: string) =>
    (await request(`${t.url}/api/v1/metrics?name=${name}`, { auth: bearer(fixture.viewerToken) })).body.items as {
      value: number;
    }[];
  const rows = (fixture: TenantFixture, name: string, count: number) =>
    eventually(async () => {
      const items = await stored(fixture, name);
      return items.length === count ? items : undefined;
    });
  /** The PUBACKs the client receives, by packet id. */
  const pubacks = (client: MqttClient) => {
    const seen = new Map<number, IPubackPacket>();
    client.on("packetreceive", (packet) => {
      if (packet.cmd === "puback") seen.set(packet.messageId as number, packet);
    });
    return seen;
  };
  const disconnectOf = (raw: RawMqttClient) =>
    waitFor(raw.received, (p) => p.cmd === "disconnect").then((p) => (p as { reasonCode: number }).reasonCode);

  it("offers what it supports in the CONNACK, assigns a client id to a client that sent none, and bounds its keep alive", async () => {
    const client = await asAgent(a, { clientId: "", keepalive: 0 });
    const connack = (client as unknown as { connackPacket: IConnackPacket }).connackPacket;
    expect(connack.properties).toEqual({
      receiveMaximum: 4,
      topicAliasMaximum: 8,
      maximumPacketSize: 262144,
      retainAvailable: true,
      wildcardSubscriptionAvailable: true,
      subscriptionIdentifiersAvailable: false,
      sharedSubscriptionAvailable: true,
      assignedClientIdentifier: expect.stringMatching(/^auto-/),
      serverKeepAlive: 30,
    });
    await client.publishAsync(topicOf(a, "assigned"), "1", { qos: 1 });
    await rows(a, "assigned", 1);
    // Counted and shown as any connection: the console's connected clients, the agent's presence.
    const listed = await request(`${t.url}/api/v1/admin/tenants/${a.tenantId}/clients`, { auth: bearer(t.adminToken) });
    expect(listed.body).toContainEqual(
      expect.objectContaining({ client_id: connack.properties?.assignedClientIdentifier, agent_id: "pump-1" }),
    );
  });

  it("refuses a CONNECT with the reason code of the refusal: 0x85 client id, 0x97 tenant quota", async () => {
    const credentials = { protocolVersion: 5 as const, username: a.agent.username, password: a.agent.password };
    expect(await connackOf(tcp, { ...credentials, clientId: "x".repeat(33) })).toBe(REFUSALS.bad_client_id.mqtt5);
    const limits = await request(`${t.url}/api/v1/admin/tenants/${b.tenantId}/limits`, {
      method: "PUT",
      auth: bearer(t.adminToken),
      body: { max_connections: 1 },
    });
    expect(limits.status).toBe(200);
    try {
      await asAgent(b);
      expect(await connackOf(tcp, { protocolVersion: 5, username: b.agent.username, password: b.agent.password })).toBe(
        REFUSALS.tenant_connection_quota.mqtt5,
      );
    } finally {
      await request(`${t.url}/api/v1/admin/tenants/${b.tenantId}/limits`, {
        method: "PUT",
        auth: bearer(t.adminToken),
        body: { max_connections: null },
      });
    }
  });

  it("says in the PUBACK of a batch partly refused how many readings were, and why, when asked", async () => {
    const asking = await asAgent(a);
    const acks = pubacks(asking);
    const packet = await asking.publishAsync(topicOf(a, "partial"), JSON.stringify([1, { value: "x" }, 3]), {
      qos: 1,
    });
    const ack = acks.get(packet?.messageId as number);
    expect(ack?.reasonCode ?? 0).toBe(MQTT5.SUCCESS);
    expect(ack?.properties).toEqual({
      reasonString: expect.stringMatching(/^1 of 3 readings refused, the first bad_value: /),
      userProperties: { accepted: "2", rejected: "1" },
    });
    await rows(a, "partial", 2);

    // Request Problem Information 0: the code, without the reason string or the counts.
    const silent = await asAgent(a, { properties: { requestProblemInformation: false } });
    const silentAcks = pubacks(silent);
    expect(await pubackCode(silent, topicOf(a, "partial"), '{"value": "x"}', { qos: 1 })).toBe(
      REFUSALS.bad_value.mqtt5,
    );
    await eventually(async () => (silentAcks.size > 0 ? true : undefined));
    expect([...silentAcks.values()][0]?.properties).toBeUndefined();
  });

  it("refuses a retained message past the quota with 0x97, and stores nothing", async () => {
    const admin = await connect(tcp, { protocolVersion: 5, username: "admin", password: t.adminToken });
    clients.push(admin);
    expect(await pubackCode(admin, "plain/one", "1", { qos: 1, retain: true })).toBe(0);
    expect(await pubackCode(admin, "plain/two", "2", { qos: 1, retain: true })).toBe(REFUSALS.retained_quota.mqtt5);
    const reader = inbox(admin);
    await admin.subscribeAsync("plain/#");
    await sleep(200);
    expect(reader.messages.map((m) => m.topic)).toEqual(["plain/one"]);
    await admin.publishAsync("plain/one", "", { qos: 1, retain: true });
  });

  it("honours the Message Expiry of a retained message (the remaining interval, then nothing), without the publisher's alias", async () => {
    const admin = await connect(tcp, { protocolVersion: 5, username: "admin", password: t.adminToken });
    clients.push(admin);
    await admin.publishAsync("plain/expiring", "soon stale", {
      qos: 1,
      retain: true,
      properties: { messageExpiryInterval: 2, topicAlias: 1 },
    });
    const receive = async () => {
      const reader = await connect(tcp, { protocolVersion: 5, username: "admin", password: t.adminToken });
      clients.push(reader);
      const got: { properties?: { messageExpiryInterval?: number; topicAlias?: number } }[] = [];
      reader.on("message", (_topic, _payload, packet) => got.push(packet));
      await reader.subscribeAsync("plain/expiring", { qos: 1 });
      await sleep(300);
      return got;
    };
    const [fresh] = await receive();
    expect(fresh?.properties?.messageExpiryInterval).toBeGreaterThanOrEqual(1);
    expect(fresh?.properties?.messageExpiryInterval).toBeLessThanOrEqual(2);
    // The publisher's topic alias is its own: never handed on.
    expect(fresh?.properties?.topicAlias).toBeUndefined();
    await sleep(2000);
    expect(await receive()).toEqual([]);
    await admin.publishAsync("plain/expiring", "", { qos: 1, retain: true });
  });

  it("answers SUBACK with 0x87 not authorized and 0x8F invalid filter, shared subscriptions judged by their filter", async () => {
    const agent = await asAgent(a);
    expect(await subscribeGrants(agent, [`ingest/${a.tenantId}/pump-1/errors`, "metrics/#"])).toEqual([
      1,
      MQTT5.NOT_AUTHORIZED,
    ]);
    // Filters mqtt.js would not send; counted as the refusals of the ACL are.
    const deniedBefore = await metricValue(t.url, "edge_ingest_mqtt_subscriptions_denied_total");
    const raw = await rawAgent(a);
    raw.send({
      cmd: "subscribe",
      messageId: 7,
      subscriptions: [
        { topic: "ingest/#/errors", qos: 1 },
        { topic: `ingest/${a.tenantId}/pump-1/errors`, qos: 1 },
        { topic: `$share/group/ingest/${a.tenantId}/pump-1/errors`, qos: 1 },
        { topic: "$share/group", qos: 1 },
        { topic: `$share/group/metrics/${a.tenantId}/#`, qos: 1 },
      ],
    });
    const suback = await waitFor(raw.received, (p) => p.cmd === "suback");
    expect((suback as { granted: number[] }).granted).toEqual([
      MQTT5.TOPIC_FILTER_INVALID,
      1,
      1,
      MQTT5.TOPIC_FILTER_INVALID,
      MQTT5.NOT_AUTHORIZED,
    ]);
    expect(await metricValue(t.url, "edge_ingest_mqtt_subscriptions_denied_total")).toBe(deniedBefore + 3);
  });

  it("takes topic aliases, and disconnects with 0x94 a client that uses one it may not", async () => {
    const agent = await asAgent(a);
    await agent.publishAsync(topicOf(a, "aliased"), "1", { qos: 1, properties: { topicAlias: 2 } });
    await agent.publishAsync("", "2", { qos: 1, properties: { topicAlias: 2 } });
    expect((await rows(a, "aliased", 2)).map((r) => r.value).sort()).toEqual([1, 2]);

    const raw = await rawAgent(a);
    raw.send({
      cmd: "publish",
      topic: topicOf(a, "aliased"),
      payload: "3",
      qos: 1,
      messageId: 1,
      retain: false,
      dup: false,
      properties: { topicAlias: 9 },
    });
    expect(await disconnectOf(raw)).toBe(MQTT5.TOPIC_ALIAS_INVALID);
    await raw.closed;
    await sleep(200);
    expect(await stored(a, "aliased")).toHaveLength(2);
  });

  it("disconnects with 0x93 a client that sends more unacknowledged publishes than its Receive Maximum", async () => {
    const raw = await rawAgent(a);
    const publish = (messageId: number): Packet => ({
      cmd: "publish",
      topic: topicOf(a, "flooded"),
      payload: String(messageId),
      qos: 1,
      messageId,
      retain: false,
      dup: false,
    });
    // Six in one write: the broker reads them all before it can acknowledge the first.
    raw.send(...[1, 2, 3, 4, 5, 6].map(publish));
    expect(await disconnectOf(raw)).toBe(MQTT5.RECEIVE_MAXIMUM_EXCEEDED);
    await raw.closed;
    await sleep(200);
    expect((await stored(a, "flooded")).length).toBeLessThanOrEqual(4);
  });

  it("disconnects with 0x8D a client silent past its keep alive", async () => {
    const raw = await rawAgent(a, { keepalive: 1 });
    expect(await disconnectOf(raw)).toBe(MQTT5.KEEP_ALIVE_TIMEOUT);
  });

  it("does not send a client a packet over its Maximum Packet Size", async () => {
    const viewer = await connect(tcp, {
      protocolVersion: 5,
      username: "viewer",
      password: a.viewerToken,
      properties: { maximumPacketSize: 200 },
    });
    clients.push(viewer);
    const seen = inbox(viewer);
    await viewer.subscribeAsync(`metrics/${a.tenantId}/#`, { qos: 1 });
    const agent = await asAgent(a);
    await agent.publishAsync(topicOf(a, "sized"), JSON.stringify({ value: 1, tags: { long: "x".repeat(200) } }), {
      qos: 1,
    });
    await agent.publishAsync(topicOf(a, "sized"), JSON.stringify({ value: 2 }), { qos: 1 });
    const [message] = await seen.waitFor(1);
    expect(JSON.parse(message?.payload ?? "")).toMatchObject({ value: 2 });
    await sleep(200);
    expect(seen.messages).toHaveLength(1);
  });

  it("speaks 5.0 with mosquitto_pub -V mqttv5, which reads the reason of a refused CONNECT", async () => {
    const base = ["-V", "mqttv5", "-h", "127.0.0.1", "-p", String(port), "-q", "1", "-t", topicOf(a, "mosquitto5")];
    await run("mosquitto_pub", [...base, "-u", a.agent.username, "-P", a.agent.password, "-m", "7"]);
    expect((await rows(a, "mosquitto5", 1))[0]?.value).toBe(7);
    const refused = await run("mosquitto_pub", [...base, "-u", a.agent.username, "-P", "wrong", "-m", "8"]).then(
      () => "",
      (error: { stderr: string }) => error.stderr,
    );
    expect(refused).toMatch(/bad user ?name or password/i);
  });

  it.skipIf(!python)("speaks 5.0 with paho-mqtt 2 for Python: reason codes on CONNACK, PUBACK and SUBACK", async () => {
    if (!python) return;
    const { stdout } = await run(python, [
      PAHO,
      "127.0.0.1",
      String(port),
      a.agent.username,
      a.agent.password,
      topicOf(a, "paho"),
      `metrics/${b.tenantId}/pump-2/paho`,
    ]);
    expect(JSON.parse(stdout)).toEqual({
      connack: 0,
      accepted: 0,
      bad_value: REFUSALS.bad_value.mqtt5,
      forbidden: REFUSALS.forbidden.mqtt5,
      suback: [MQTT5.NOT_AUTHORIZED],
    });
    expect((await rows(a, "paho", 1))[0]?.value).toBe(21.5);
    const wrong = await run(python, [PAHO, "127.0.0.1", String(port), a.agent.username, "wrong", "x", "y"]).then(
      (r) => r.stdout,
    );
    expect(JSON.parse(wrong)).toEqual({ connack: REFUSALS.bad_credentials.mqtt5 });
  });
});

describe("MQTT 5.0 at shutdown", () => {
  it("tells a connected client the broker is shutting down (0x8B)", async () => {
    const t = await startTestApp("embedded");
    try {
      const a = await createTenant(t.url, t.adminToken, "pump-1");
      const client = await connect(`mqtt://127.0.0.1:${t.app.mqttPorts?.tcp}`, {
        protocolVersion: 5,
        username: a.agent.username,
        password: a.agent.password,
      });
      const told = disconnectCode(client);
      await t.app.close();
      expect(await told).toBe(MQTT5.SERVER_SHUTTING_DOWN);
    } finally {
      await t.cleanup();
    }
  });
});

describe("MQTT 5.0 feedback expiry", () => {
  it("sends queued feedback with what remains of its Message Expiry, and none once it has expired", {
    timeout: 60_000,
  }, async () => {
    // The second refusal of a reason waits for the next tick of the interval, long enough for the agent to leave.
    const t = await startTestApp("embedded", { MQTT_FEEDBACK_EXPIRY_SECONDS: "4", MQTT_FEEDBACK_INTERVAL_MS: "1500" });
    try {
      const a = await createTenant(t.url, t.adminToken, "pump-1");
      const url = `mqtt://127.0.0.1:${t.app.mqttPorts?.tcp}`;
      const options = {
        protocolVersion: 5 as const,
        username: a.agent.username,
        password: a.agent.password,
        clientId: "expiring",
        clean: false,
        properties: { sessionExpiryInterval: 60 },
      };
      const feedback = `ingest/${a.tenantId}/pump-1/errors`;
      /** Two refusals of one reason: the first is sent at once, the second waits for the next tick, after the agent left. */
      const refuseTwiceAndLeave = async () => {
        const agent = await connect(url, options);
        await agent.subscribeAsync(feedback, { qos: 1 });
        const first = new Promise<void>((resolve) => agent.once("message", () => resolve()));
        await pubackCode(agent, `metrics/${a.tenantId}/pump-1/t`, '{"value":"x"}', { qos: 1 });
        await pubackCode(agent, `metrics/${a.tenantId}/pump-1/t`, '{"value":"y"}', { qos: 1 });
        await first;
        await agent.endAsync();
        // The second, sent at the next tick, waits in the session.
        await sleep(1600);
      };
      const queued = async (waitMs: number) => {
        const agent = await connect(url, options);
        const received: { properties?: { messageExpiryInterval?: number } }[] = [];
        agent.on("message", (_topic, _payload, packet) => received.push(packet));
        await sleep(waitMs);
        await agent.endAsync();
        return received;
      };

      await refuseTwiceAndLeave();
      const fresh = await queued(500);
      expect(fresh).toHaveLength(1);
      expect(fresh[0]?.properties?.messageExpiryInterval).toBeGreaterThanOrEqual(1);
      expect(fresh[0]?.properties?.messageExpiryInterval).toBeLessThanOrEqual(4);

      await refuseTwiceAndLeave();
      await sleep(4200);
      expect(await queued(500)).toEqual([]);
    } finally {
      await t.cleanup();
    }
  });
});
