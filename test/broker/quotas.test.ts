import net from "node:net";
import type { MqttClient } from "mqtt";
import mqttPacket from "mqtt-packet";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { type Mode, startTestApp, type TestApp } from "../helpers/app.ts";
import { bearer, createTenant, eventually, metricValue, request, type TenantFixture } from "../helpers/http.ts";
import { connackOf, connect, inbox, sleep } from "../helpers/mqtt.ts";
import { distributedNodes } from "../helpers/nodes.ts";
import { rawConnect } from "../helpers/raw-mqtt.ts";
import { distributedUnavailable } from "../helpers/services.ts";

const skipDistributed = Boolean(await distributedUnavailable());

for (const { mode, skip } of [
  { mode: "embedded" as Mode, skip: false },
  { mode: "distributed" as Mode, skip: skipDistributed },
]) {
  describe.skipIf(skip)(`quotas (${mode})`, () => {
    let t: TestApp;
    let tcp: string;
    const clients: MqttClient[] = [];
    beforeAll(async () => {
      t = await startTestApp(mode, {
        MQTT_ALLOW_ANONYMOUS: "true",
        MQTT_MAX_RETAINED_MESSAGES: "5",
        MQTT_MAX_RETAINED_MESSAGES_PER_PRINCIPAL: "3",
        MQTT_MAX_CONNECTION_RATE: "5",
        MQTT_CONNECTION_RATE_BURST: "20",
        MQTT_CONNECTION_MAX_WAIT_MS: "2000",
      });
      tcp = `mqtt://127.0.0.1:${t.app.mqttPorts?.tcp}`;
    });
    afterEach(async () => {
      await Promise.all(clients.splice(0).map((client) => client.endAsync(true).catch(() => undefined)));
    });
    afterAll(() => t?.cleanup());
    const track = (client: MqttClient) => {
      clients.push(client);
      return client;
    };
    const setLimits = (fixture: TenantFixture, limits: Record<string, number>) =>
      request(`${t.url}/api/v1/admin/tenants/${fixture.tenantId}/limits`, {
        method: "PUT",
        auth: bearer(t.adminToken),
        body: limits,
      });

    it("refuses a tenant's connection past its quota with CONNACK 3, and lets it in once one leaves", async () => {
      const a = await createTenant(t.url, t.adminToken, "counted");
      const b = await createTenant(t.url, t.adminToken, "other");
      expect((await setLimits(a, { max_connections: 2 })).status).toBe(200);
      const login = { username: a.agent.username, password: a.agent.password };
      const first = track(await connect(tcp, login));
      track(await connect(tcp, { username: "viewer", password: a.viewerToken }));
      expect(await connackOf(tcp, login)).toBe(3);
      // Another tenant is not counted against it.
      expect(await connackOf(tcp, { username: b.agent.username, password: b.agent.password })).toBe("connected");
      await first.endAsync();
      await eventually(async () => ((await connackOf(tcp, login)) === "connected" ? true : undefined));
      expect(
        await metricValue(t.url, "edge_ingest_mqtt_connects_refused_total", { reason: "tenant_connection_quota" }),
      ).toBe(1);
    });

    it("refuses a retained message past the quota with a reason, and frees room when a topic is cleared", async () => {
      const publisher = track(await connect(tcp));
      for (const i of [0, 1, 2, 3, 4]) {
        await publisher.publishAsync(`room/${i}`, `value ${i}`, { qos: 1, retain: true });
      }
      const retainedNow = async () => {
        const subscriber = await connect(tcp);
        const seen = inbox(subscriber);
        await subscriber.subscribeAsync("room/#", { qos: 1 });
        await sleep(300);
        await subscriber.endAsync();
        return seen.messages
          .filter((m) => m.retain)
          .map((m) => m.topic)
          .sort();
      };
      expect(await retainedNow()).toEqual(["room/0", "room/1", "room/2"]);
      expect(await metricValue(t.url, "edge_ingest_metrics_rejected_total", { reason: "retained_quota" })).toBe(2);

      // Replacing a retained message takes no more room; clearing one gives a place back.
      await publisher.publishAsync("room/1", "replaced", { qos: 1, retain: true });
      await publisher.publishAsync("room/0", "", { qos: 1, retain: true });
      await publisher.publishAsync("room/5", "value 5", { qos: 1, retain: true });
      expect(await retainedNow()).toEqual(["room/1", "room/2", "room/5"]);

      // The admin has its own three, up to the broker's five in all; a will is no way around it.
      const admin = track(await connect(tcp, { username: "admin", password: t.adminToken }));
      await admin.publishAsync("room/a1", "1", { qos: 1, retain: true });
      await admin.publishAsync("room/a2", "2", { qos: 1, retain: true });
      const willing = await rawConnect(Number(t.app.mqttPorts?.tcp), {
        username: "admin",
        password: t.adminToken,
        will: { topic: "room/will", payload: Buffer.from("gone"), qos: 1, retain: true },
      });
      willing.socket.destroy();
      await sleep(300);
      expect(await retainedNow()).toEqual(["room/1", "room/2", "room/5", "room/a1", "room/a2"]);
      expect(await metricValue(t.url, "edge_ingest_metrics_rejected_total", { reason: "retained_quota" })).toBe(3);
    });

    it("holds back new connections past the listener's rate, and refuses at once those whose turn is too far away", async () => {
      // The burst (20) is partly spent by the tests before; 60 at once at 5 a second with a 2 s
      // longest wait: at most 30 are let in, at that pace, and the rest are told to come back later.
      const refusedBefore = await metricValue(t.url, "edge_ingest_mqtt_connects_refused_total", {
        reason: "connection_rate",
      });
      const started = Date.now();
      const outcomes = Promise.all(
        Array.from({ length: 60 }, async () => ({ code: await connackOf(tcp, {}), after: Date.now() - started })),
      );
      const admitted = (await outcomes).filter((o) => o.code === "connected");
      const refused = (await outcomes).filter((o) => o.code !== "connected");
      expect(new Set(refused.map((o) => o.code))).toEqual(new Set([3]));
      expect(refused.length).toBeGreaterThanOrEqual(30);
      // Refused at once, not after waiting out a CONNACK timeout.
      expect(Math.max(...refused.map((o) => o.after))).toBeLessThan(1500);
      expect(Math.max(...admitted.map((o) => o.after))).toBeGreaterThan(1000);
      expect(Math.max(...admitted.map((o) => o.after))).toBeLessThan(2000 + 1500);
      expect(
        await metricValue(t.url, "edge_ingest_mqtt_connections_delayed_total", { listener: "tcp" }),
      ).toBeGreaterThan(5);
      expect(await metricValue(t.url, "edge_ingest_mqtt_connects_refused_total", { reason: "connection_rate" })).toBe(
        refusedBefore + refused.length,
      );
    }, 30_000);
  });
}

/** An embedded app taking one new anonymous connection a second, for the describe it is called in. */
function oneConnectionASecond(burst: number, maxWaitMs: number): { readonly t: TestApp } {
  const app = {} as { t: TestApp };
  beforeAll(async () => {
    app.t = await startTestApp("embedded", {
      MQTT_ALLOW_ANONYMOUS: "true",
      MQTT_MAX_CONNECTION_RATE: "1",
      MQTT_CONNECTION_RATE_BURST: String(burst),
      MQTT_CONNECTION_MAX_WAIT_MS: String(maxWaitMs),
    });
  });
  afterAll(() => app.t?.cleanup());
  return app;
}

describe("a connection past the rate with no time to wait", () => {
  const app = oneConnectionASecond(1, 0);

  it("is told why in its own protocol: MQTT 5 0x9F connection rate exceeded, 3.1.1 CONNACK 3", async () => {
    const tcp = `mqtt://127.0.0.1:${app.t.app.mqttPorts?.tcp}`;
    expect(await connackOf(tcp, {})).toBe("connected");
    expect(await connackOf(tcp, { protocolVersion: 5 })).toBe(0x9f);
    expect(await connackOf(tcp, { protocolVersion: 4 })).toBe(3);
    expect(await connackOf(tcp, { protocolVersion: 3 })).toBe(3);
    expect(await metricValue(app.t.url, "edge_ingest_mqtt_connects_refused_total", { reason: "connection_rate" })).toBe(
      3,
    );
  });

  it("cuts a refused connection that sends anything but a CONNECT, or nothing within 5 s, without a word", async () => {
    const port = Number(app.t.app.mqttPorts?.tcp);
    await sleep(1100);
    expect(await connackOf(`mqtt://127.0.0.1:${port}`, {})).toBe("connected");
    const pinging = socketAt(port);
    const silent = socketAt(port);
    pinging.socket.write(mqttPacket.generate({ cmd: "pingreq" }));
    expect(await pinging.closed).toEqual({ bytes: 0 });
    const started = Date.now();
    expect(await silent.closed).toEqual({ bytes: 0 });
    expect(Date.now() - started).toBeGreaterThan(4000);
  }, 15_000);
});

/** A bare socket, and what it had received by the time it closed. */
function socketAt(port: number) {
  const socket = net.connect(port, "127.0.0.1");
  let bytes = 0;
  socket.on("data", (chunk: Buffer) => {
    bytes += chunk.length;
  });
  const closed = new Promise<{ bytes: number }>((resolve) => socket.once("close", () => resolve({ bytes })));
  return { socket, closed };
}

describe("handshakes ahead of a new connection", () => {
  const app = oneConnectionASecond(1000, 2000);

  it("count in its wait: past MQTT_CONNECTION_MAX_WAIT_MS of them at the rate, it is refused though tokens are left", async () => {
    const port = Number(app.t.app.mqttPorts?.tcp);
    const tcp = `mqtt://127.0.0.1:${port}`;
    // Three connections taken in that never send their CONNECT: 3 s of handshakes at 1 a second.
    const stuck = [socketAt(port), socketAt(port), socketAt(port)];
    await sleep(200);
    expect(await connackOf(tcp, { protocolVersion: 5 })).toBe(0x9f);
    expect(await connackOf(tcp, { protocolVersion: 4 })).toBe(3);
    for (const { socket } of stuck) socket.destroy();
    await Promise.all(stuck.map(({ closed }) => closed));
    // Once the broker has seen them go, nothing is ahead any more.
    await eventually(async () =>
      (await metricValue(app.t.url, "edge_ingest_mqtt_connections")) === 0 ? true : undefined,
    );
    expect(await connackOf(tcp, {})).toBe("connected");
    expect(await metricValue(app.t.url, "edge_ingest_mqtt_connects_refused_total", { reason: "connection_rate" })).toBe(
      2,
    );
  });
});

describe.skipIf(skipDistributed)("a tenant's connection quota across brokers", () => {
  const adminToken = `admin-${"y".repeat(40)}`;
  const { startNode, sharedBackends, track } = distributedNodes(adminToken);

  it("counts the tenant's connections on every broker together", async () => {
    const shared = await sharedBackends();
    const first = await startNode({ ...shared, TENANT_MAX_CONNECTIONS: "2", ROLES: "api,broker,worker" });
    const second = await startNode({ ...shared, TENANT_MAX_CONNECTIONS: "2", ROLES: "broker" });
    const tenant = await createTenant(first.httpUrl, adminToken, "spread");
    const login = { username: tenant.agent.username, password: tenant.agent.password };
    track(await connect(`mqtt://127.0.0.1:${first.mqttPorts?.tcp}`, login));
    const onSecond = track(await connect(`mqtt://127.0.0.1:${second.mqttPorts?.tcp}`, login));
    expect(await connackOf(`mqtt://127.0.0.1:${first.mqttPorts?.tcp}`, login)).toBe(3);
    expect(await connackOf(`mqtt://127.0.0.1:${second.mqttPorts?.tcp}`, login)).toBe(3);
    await onSecond.endAsync();
    await eventually(async () =>
      (await connackOf(`mqtt://127.0.0.1:${first.mqttPorts?.tcp}`, login)) === "connected" ? true : undefined,
    );
  });
});

for (const { mode, skip } of [
  { mode: "embedded" as Mode, skip: false },
  { mode: "distributed" as Mode, skip: skipDistributed },
]) {
  describe.skipIf(skip)(`the retained quota under a burst (${mode})`, () => {
    let t: TestApp;
    beforeAll(async () => {
      t = await startTestApp(mode, { MQTT_ALLOW_ANONYMOUS: "true", MQTT_MAX_RETAINED_MESSAGES_PER_PRINCIPAL: "100" });
    });
    afterAll(() => t?.cleanup());

    it("keeps exactly the bound of 1,000 retained publishes written at once, and refuses the rest", async () => {
      const port = t.app.mqttPorts?.tcp as number;
      const burst = await rawConnect(port);
      const payload = Buffer.alloc(1024, "x");
      burst.socket.write(
        Buffer.concat(
          Array.from({ length: 1000 }, (_, i) =>
            mqttPacket.generate({ cmd: "publish", topic: `burst/${i}`, payload, qos: 0, retain: true, dup: false }),
          ),
        ),
      );
      const refused = () => metricValue(t.url, "edge_ingest_metrics_rejected_total", { reason: "retained_quota" });
      await eventually(async () => ((await refused()) === 900 ? true : undefined), 20_000);
      burst.socket.destroy();

      const subscriber = await connect(`mqtt://127.0.0.1:${port}`);
      const seen = inbox(subscriber);
      await subscriber.subscribeAsync("burst/#", { qos: 0 });
      await seen.waitFor(100);
      await sleep(500);
      await subscriber.endAsync();
      expect(seen.messages.filter((m) => m.retain)).toHaveLength(100);
      expect(await refused()).toBe(900);
    });
  });
}
