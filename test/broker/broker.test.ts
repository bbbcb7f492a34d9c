import { execFile } from "node:child_process";
import { once } from "node:events";
import { createRequire } from "node:module";
import net from "node:net";
import { promisify } from "node:util";
import { Queue } from "bullmq";
import type { MqttClient } from "mqtt";
import mqttPacket from "mqtt-packet";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { INGEST_QUEUE_NAME } from "../../src/ingest/bullmq-queue.ts";
import { MQTT5, REFUSALS } from "../../src/ingest/refusals.ts";
import { type Mode, startTestApp, type TestApp } from "../helpers/app.ts";
import { bearer, createTenant, eventually, request, type TenantFixture } from "../helpers/http.ts";
import {
  closed,
  connackOf,
  connect,
  disconnectCode,
  hasMosquittoClients,
  inbox,
  pubackCode,
  sleep,
  subscribeGrants,
} from "../helpers/mqtt.ts";
import { rawConnect } from "../helpers/raw-mqtt.ts";
import { distributedUnavailable, REDIS_URL } from "../helpers/services.ts";

const skipDistributed = Boolean(await distributedUnavailable());
const packetIdTable = createRequire(import.meta.url)("mqtt-packet/numbers.js").cache as Record<number, Buffer>;
const run = promisify(execFile);
const mosquittoClients = await hasMosquittoClients();

for (const { mode, skip, protocolVersion } of [
  { mode: "embedded" as Mode, skip: false, protocolVersion: 4 as const },
  { mode: "embedded" as Mode, skip: false, protocolVersion: 5 as const },
  { mode: "distributed" as Mode, skip: skipDistributed, protocolVersion: 4 as const },
  { mode: "distributed" as Mode, skip: skipDistributed, protocolVersion: 5 as const },
]) {
  // The same rules for both: MQTT 5 says why in its reason codes, where 3.1.1 has one refusal code.
  const v5 = protocolVersion === 5;
  const REFUSED_FILTER = v5 ? REFUSALS.forbidden.mqtt5 : 128;
  describe.skipIf(skip)(`MQTT broker (${mode}, MQTT ${v5 ? "5.0" : "3.1.1"})`, () => {
    let t: TestApp;
    let a: TenantFixture;
    let b: TenantFixture;
    let tcp: string;
    let ws: string;
    const clients: MqttClient[] = [];

    beforeAll(async () => {
      t = await startTestApp(mode, {
        MQTT_MAX_VIOLATIONS: "3",
        MQTT_MAX_PAYLOAD_BYTES: "512",
        MQTT_MAX_PACKET_BYTES: "4096",
        MAX_BATCH_ITEMS: "3",
      });
      a = await createTenant(t.url, t.adminToken, "dev-a");
      b = await createTenant(t.url, t.adminToken, "dev-b");
      tcp = `mqtt://127.0.0.1:${t.app.mqttPorts?.tcp}`;
      ws = `ws://127.0.0.1:${t.app.mqttPorts?.ws}/mqtt`;
    });
    afterEach(async () => {
      await Promise.all(clients.splice(0).map((c) => c.endAsync(true).catch(() => undefined)));
    });
    afterAll(() => t?.cleanup());

    const track = async (client: Promise<MqttClient>) => {
      const connected = await client;
      clients.push(connected);
      return connected;
    };
    const asAgent = (fixture: TenantFixture, options = {}) =>
      track(
        connect(tcp, {
          protocolVersion,
          username: fixture.agent.username,
          password: fixture.agent.password,
          ...options,
        }),
      );
    const asViewer = (fixture: TenantFixture, url = ws, options = {}) =>
      track(connect(url, { protocolVersion, username: "viewer", password: fixture.viewerToken, ...options }));
    const topicOf = (fixture: TenantFixture, metric: string) =>
      `metrics/${fixture.tenantId}/${fixture.agent.agentId}/${metric}`;
    const feedbackOf = (fixture: TenantFixture) => `ingest/${fixture.tenantId}/${fixture.agent.agentId}/errors`;
    /** The tenant's stored rows of one metric, once there are `count` of them. */
    const rows = (fixture: TenantFixture, name: string, count: number) =>
      eventually(async () => {
        const { body } = await request(`${t.url}/api/v1/metrics?name=${name}`, { auth: bearer(fixture.viewerToken) });
        return body.items.length === count ? body.items : undefined;
      });
    /** Waits long enough for a wrongly stored row to show, then returns the rows there are. */
    const settledRows = async (fixture: TenantFixture, name: string) => {
      await sleep(400);
      const { body } = await request(`${t.url}/api/v1/metrics?name=${name}`, { auth: bearer(fixture.viewerToken) });
      return body.items;
    };

    it("acknowledges without building mqtt-packet's 65,536-Buffer packet-id table", async () => {
      const agent = await asAgent(a);
      await agent.publishAsync(topicOf(a, "packet-ids"), JSON.stringify({ value: 1 }), { qos: 1 });
      await rows(a, "packet-ids", 1);
      // The table the broker's writes would have filled (the test's mqtt.js client shares the module).
      expect(Object.keys(packetIdTable)).toHaveLength(0);
    });

    it.each([0, 1, 2] as const)("stores a QoS %i publish", async (qos) => {
      const agent = await asAgent(a);
      await agent.publishAsync(
        topicOf(a, `qos${qos}`),
        JSON.stringify({ value: qos + 0.5, tags: { q: String(qos) } }),
        {
          qos,
        },
      );
      const [row] = await rows(a, `qos${qos}`, 1);
      expect(row).toMatchObject({ agent_id: "dev-a", value: qos + 0.5, tags: { q: String(qos) } });
    });

    /** Whether the reading is durable at this instant: stored, or (distributed) held by a queued job. */
    const durableNow = async (fixture: TenantFixture, name: string): Promise<boolean> => {
      const stored = async () =>
        (await request(`${t.url}/api/v1/metrics?name=${name}`, { auth: bearer(fixture.viewerToken) })).body.items
          .length > 0;
      if (await stored()) return true;
      if (mode === "embedded") return false;
      const queue = new Queue(INGEST_QUEUE_NAME, { connection: { url: REDIS_URL }, prefix: t.redisPrefix });
      try {
        const jobs = await queue.getJobs(["waiting", "active", "delayed", "prioritized", "completed"]);
        if (jobs.some((job) => JSON.stringify(job.data).includes(`"name":"${name}"`))) return true;
      } finally {
        await queue.close();
      }
      // Stored (and its job removed) while the jobs were being read.
      return stored();
    };

    it("acknowledges a QoS 1 publish only once its reading is durable", async () => {
      const agent = await asAgent(a);
      // In embedded mode the PUBACK follows the commit; in distributed mode, the Redis write.
      // Asked the moment the PUBACK arrives: an acknowledgement sent any earlier finds nothing.
      for (const n of [1, 2, 3, 4, 5]) {
        await agent.publishAsync(topicOf(a, `durable-${n}`), String(n), { qos: 1 });
        expect(await durableNow(a, `durable-${n}`), `reading ${n}`).toBe(true);
      }
    });

    it("stores a batch payload and names the refused items on the feedback topic", async () => {
      const agent = await asAgent(a);
      const feedback = inbox(agent);
      await agent.subscribeAsync(feedbackOf(a));
      await agent.publishAsync(
        topicOf(a, "batch"),
        JSON.stringify([1, { value: 2, timestamp: Date.now() - 60_000 }, "x"]),
        {
          qos: 1,
        },
      );
      const stored = await rows(a, "batch", 2);
      expect(stored.map((r: { value: number }) => r.value).sort()).toEqual([1, 2]);
      const [message] = await feedback.waitFor(1);
      expect(JSON.parse(message?.payload ?? "")).toEqual({
        topic: topicOf(a, "batch"),
        reason: "bad_value",
        message: expect.any(String),
        index: 2,
        count: 1,
      });
    });

    it("acknowledges and discards every kind of bad publish, reports each reason, and keeps the connection", async () => {
      const agent = await asAgent(a);
      const feedback = inbox(agent);
      expect(await subscribeGrants(agent, [feedbackOf(a)])).toEqual([1]);
      const viewer = await asViewer(a);
      const seen = inbox(viewer);
      await viewer.subscribeAsync(`metrics/${a.tenantId}/#`);

      const bad: [string, string][] = [
        [`metrics/${a.tenantId}/dev-a/bad name`, "1"],
        [topicOf(a, "reject"), "{not json"],
        [topicOf(a, "reject"), '{"value":"high"}'],
        [topicOf(a, "reject"), '{"value":1,"timestamp":"yesterday"}'],
        [topicOf(a, "reject"), '{"value":1,"dedupe_id":7}'],
        [topicOf(a, "reject"), '{"value":1,"tags":["x"]}'],
        [topicOf(a, "reject"), JSON.stringify({ value: 1, pad: "x".repeat(600) })],
        [topicOf(a, "reject"), "[1,2,3,4]"],
      ];
      const reasons = [
        "bad_topic",
        "bad_json",
        "bad_value",
        "bad_timestamp",
        "bad_dedupe_id",
        "bad_tags",
        "too_large",
        "too_many",
      ] as const;
      const codes: number[] = [];
      for (const [topic, payload] of bad) codes.push(await pubackCode(agent, topic, payload, { qos: 1, retain: true }));
      // 3.1.1 has no way to say it: the refused publish is acknowledged as any other.
      expect(codes).toEqual(reasons.map((reason) => (v5 ? REFUSALS[reason].mqtt5 : 0)));
      const reports = await feedback.waitFor(bad.length);
      // One message per reason; a reason this agent was refused for a moment ago waits for the next tick.
      expect(reports.map((m) => JSON.parse(m.payload).reason).sort()).toEqual([...reasons].sort());

      // Still connected, and a good publish right after goes through.
      await agent.publishAsync(topicOf(a, "after_rejects"), "1", { qos: 1 });
      await rows(a, "after_rejects", 1);
      await seen.waitFor(1, topicOf(a, "after_rejects"));
      expect(seen.messages.filter((m) => m.topic !== topicOf(a, "after_rejects"))).toEqual([]);
      expect(await settledRows(a, "reject")).toEqual([]);

      // Nothing bad was retained either.
      const late = await asViewer(a);
      const lateInbox = inbox(late);
      await late.subscribeAsync(`metrics/${a.tenantId}/+/reject`);
      await sleep(200);
      expect(lateInbox.messages).toEqual([]);

      const metrics = (await request<string>(`${t.url}/metrics`)).body;
      for (const reason of reasons) {
        expect(metrics).toMatch(
          new RegExp(`edge_ingest_metrics_rejected_total\\{source="mqtt",reason="${reason}"\\} [1-9]`),
        );
      }
    });

    it("disconnects a client that keeps publishing to another tenant, storing nothing there", async () => {
      const attacker = await asAgent(a);
      const watcher = await asViewer(b);
      const seen = inbox(watcher);
      await watcher.subscribeAsync(`metrics/${b.tenantId}/#`);
      const gone = closed(attacker);
      const told = disconnectCode(attacker);
      for (let i = 0; i < 3; i++) {
        attacker.publish(`metrics/${b.tenantId}/dev-b/stolen`, "1", { qos: 0 });
      }
      await gone;
      expect(await told).toBe(v5 ? REFUSALS.violations.mqtt5 : undefined);
      expect(await settledRows(b, "stolen")).toEqual([]);
      expect(seen.messages).toEqual([]);
      expect((await request<string>(`${t.url}/metrics`)).body).toMatch(
        /edge_ingest_mqtt_forced_disconnects_total\{reason="violations"\} [1-9]/,
      );
    });

    it("refuses subscriptions that reach outside the principal's lane", async () => {
      const agent = await asAgent(a);
      expect(
        await subscribeGrants(agent, [
          "#",
          "metrics/#",
          `metrics/${a.tenantId}/#`,
          feedbackOf(b),
          "$SYS/#",
          feedbackOf(a),
        ]),
      ).toEqual([...Array(5).fill(REFUSED_FILTER), 1]);
      const viewer = await asViewer(b, tcp);
      expect(
        await subscribeGrants(viewer, [
          `metrics/${a.tenantId}/#`,
          "metrics/+/#",
          "#",
          "$SYS/#",
          `metrics/${b.tenantId}/#`,
        ]),
      ).toEqual([...Array(4).fill(REFUSED_FILTER), 1]);
    });

    it("shows a viewer over WebSockets its own tenant's metrics and nothing else", async () => {
      const viewerA = await asViewer(a);
      const seenA = inbox(viewerA);
      await viewerA.subscribeAsync(`metrics/${a.tenantId}/#`);
      const agentA = await asAgent(a);
      const agentB = await asAgent(b);
      await agentB.publishAsync(topicOf(b, "ws_view"), "2", { qos: 1 });
      await agentA.publishAsync(topicOf(a, "ws_view"), "1", { qos: 1 });
      const [message] = await seenA.waitFor(1);
      expect(message?.topic).toBe(topicOf(a, "ws_view"));
      expect(JSON.parse(message?.payload ?? "")).toEqual({ value: 1, timestamp: expect.any(String) });
      await sleep(200);
      expect(seenA.messages).toHaveLength(1);
    });

    it("does not let a client id reused by another tenant take over a session", async () => {
      const persistent = v5 ? { properties: { sessionExpiryInterval: 3600 } } : {};
      const first = await asAgent(a, { clientId: "shared-id", clean: false, ...persistent });
      const second = await asAgent(b, { clientId: "shared-id", clean: false, ...persistent });
      await sleep(300);
      expect(first.connected).toBe(true);
      expect(second.connected).toBe(true);
      // The same principal reusing its id does take over its own session, as MQTT says it must.
      const gone = closed(first);
      const told = disconnectCode(first);
      await asAgent(a, { clientId: "shared-id", clean: false, ...persistent });
      await gone;
      expect(await told).toBe(v5 ? MQTT5.SESSION_TAKEN_OVER : undefined);
    });

    it("stores a retained metric without retaining it, so no later subscriber of any tenant receives it", async () => {
      const agentA = await asAgent(a);
      await agentA.publishAsync(topicOf(a, "retained"), "42", { qos: 1, retain: true });
      await rows(a, "retained", 1);
      const viewerB = await asViewer(b);
      const seenB = inbox(viewerB);
      expect(await subscribeGrants(viewerB, [`metrics/${a.tenantId}/#`, `metrics/${b.tenantId}/#`])).toEqual([
        REFUSED_FILTER,
        1,
      ]);
      const viewerA = await asViewer(a);
      const seenA = inbox(viewerA);
      expect(await subscribeGrants(viewerA, [`metrics/${a.tenantId}/+/retained`])).toEqual([1]);
      await sleep(300);
      expect(seenA.messages).toEqual([]);
      expect(seenB.messages).toEqual([]);
    });

    it("neither stores nor delivers a will aimed at another tenant, and stores a valid will once", async () => {
      const viewerB = await asViewer(b);
      const seenB = inbox(viewerB);
      await viewerB.subscribeAsync(`metrics/${b.tenantId}/#`);
      const evil = await asAgent(a, {
        will: { topic: `metrics/${b.tenantId}/dev-b/will`, payload: Buffer.from("66"), qos: 1, retain: true },
      });
      const good = await asAgent(a, {
        will: { topic: topicOf(a, "last_will"), payload: Buffer.from('{"value":0}'), qos: 1, retain: false },
      });
      // An abrupt end (no DISCONNECT) is what publishes a will.
      (evil as unknown as { stream: { destroy(): void } }).stream.destroy();
      (good as unknown as { stream: { destroy(): void } }).stream.destroy();
      await rows(a, "last_will", 1);
      expect(await settledRows(b, "will")).toEqual([]);
      expect(seenB.messages).toEqual([]);
    });

    it("refuses bad credentials and anonymous clients at CONNACK", async () => {
      const [badCredentials, notAuthorized] = v5
        ? [REFUSALS.bad_credentials.mqtt5, REFUSALS.not_authorized.mqtt5]
        : [4, 5];
      expect(await connackOf(tcp, { protocolVersion, username: a.agent.username, password: "wrong" })).toBe(
        badCredentials,
      );
      expect(await connackOf(tcp, { protocolVersion, username: "ag_nobody", password: "x" })).toBe(badCredentials);
      expect(await connackOf(tcp, { protocolVersion })).toBe(notAuthorized);
      expect(await connackOf(tcp, { protocolVersion, username: "x", password: a.ingestToken })).toBe(notAuthorized);
      expect(await connackOf(ws, { protocolVersion, username: "x", password: a.viewerToken })).toBe("connected");
    });

    it("disconnects a live client when its credential is revoked", async () => {
      const c = await createTenant(t.url, t.adminToken, "doomed");
      const agent = await asAgent(c);
      const gone = closed(agent);
      const told = disconnectCode(agent);
      const revoked = await request(`${t.url}/api/v1/admin/credentials/${c.agent.username}`, {
        method: "DELETE",
        auth: bearer(t.adminToken),
      });
      expect(revoked.status).toBe(204);
      await gone;
      expect(await told).toBe(v5 ? REFUSALS.revoked.mqtt5 : undefined);
      expect(await connackOf(tcp, { protocolVersion, username: c.agent.username, password: c.agent.password })).toBe(
        v5 ? REFUSALS.bad_credentials.mqtt5 : 4,
      );
    });

    it("drops a connection that announces a packet over the size limit", async () => {
      const agent = await asAgent(a);
      const gone = closed(agent);
      const told = disconnectCode(agent);
      // mqtt.js 5 would not send a packet over the CONNACK's Maximum Packet Size: the bytes go as they are.
      const huge = {
        cmd: "publish" as const,
        topic: topicOf(a, "huge"),
        payload: Buffer.alloc(8000, 0x31),
        qos: 0 as const,
        retain: false,
        dup: false,
      };
      (agent as unknown as { stream: { write(b: Buffer): void } }).stream.write(
        mqttPacket.generate(huge, { protocolVersion }),
      );
      await gone;
      expect(await told).toBe(v5 ? REFUSALS.packet_too_large.mqtt5 : undefined);
      expect(await settledRows(a, "huge")).toEqual([]);
    });

    it.skipIf(!mosquittoClients)("takes a publish from mosquitto_pub", async () => {
      const port = String(t.app.mqttPorts?.tcp);
      await run("mosquitto_pub", [
        ...["-V", v5 ? "mqttv5" : "mqttv311", "-h", "127.0.0.1", "-p", port, "-q", "1"],
        ...["-u", a.agent.username, "-P", a.agent.password],
        ...["-t", topicOf(a, "from_mosquitto_pub"), "-m", '{"value": 3.5, "dedupe_id": "mp-1"}'],
      ]);
      const [row] = await rows(a, "from_mosquitto_pub", 1);
      expect(row).toMatchObject({ value: 3.5, dedupe_id: "mp-1" });
    });

    it.skipIf(!mosquittoClients)("serves mosquitto_sub as a viewer", async () => {
      const port = String(t.app.mqttPorts?.tcp);
      // -d prints the protocol exchange (line-buffered by stdbuf, stdout being a pipe): the agent
      // publishes once the SUBACK is in.
      let output = "";
      let subscribed!: () => void;
      const suback = new Promise<void>((resolve) => (subscribed = resolve));
      const sub = run("stdbuf", [
        ...["-oL", "mosquitto_sub", "-V", v5 ? "mqttv5" : "mqttv311", "-d", "-h", "127.0.0.1", "-p", port],
        ...["-u", "viewer", "-P", a.viewerToken],
        ...["-t", `metrics/${a.tenantId}/+/from_sub`, "-C", "1", "-W", "10"],
      ]);
      sub.child.stdout?.on("data", (chunk: Buffer) => {
        output += chunk.toString();
        if (output.includes("received SUBACK")) subscribed();
      });
      await suback;
      const agent = await asAgent(a);
      await agent.publishAsync(topicOf(a, "from_sub"), "9", { qos: 1 });
      const payload = (await sub).stdout.split("\n").find((line) => line.startsWith("{")) ?? "";
      expect(JSON.parse(payload)).toEqual({ value: 9, timestamp: expect.any(String) });
    });
  });
}

describe("MQTT broker limits", () => {
  let t: TestApp;
  let tenant: TenantFixture;
  let tcp: string;
  beforeAll(async () => {
    t = await startTestApp("embedded", {
      MQTT_MAX_CONNECTIONS: "2",
      MQTT_MAX_TOPIC_LEVELS: "4",
      MQTT_CONNECT_TIMEOUT_MS: "300",
    });
    tenant = await createTenant(t.url, t.adminToken, "limited");
    tcp = `mqtt://127.0.0.1:${t.app.mqttPorts?.tcp}`;
  });
  afterAll(() => t?.cleanup());

  const login = () => ({ username: tenant.agent.username, password: tenant.agent.password });

  /** Opens a raw TCP connection to the broker; resolves when the broker closes it, with how long that took. */
  const rawConnectionLifetime = async () => {
    const socket = net.connect(Number(t.app.mqttPorts?.tcp), "127.0.0.1");
    socket.on("error", () => undefined);
    const started = Date.now();
    await once(socket, "close");
    return Date.now() - started;
  };

  it("closes connections past MQTT_MAX_CONNECTIONS at once and counts them", async () => {
    const first = await connect(tcp, login());
    const second = await connect(tcp, login());
    try {
      // Well under the connect timeout: closed for the limit, not for silence.
      expect(await rawConnectionLifetime()).toBeLessThan(250);
      expect(first.connected && second.connected).toBe(true);
      expect((await request<string>(`${t.url}/metrics`)).body).toMatch(
        /edge_ingest_mqtt_forced_disconnects_total\{reason="max_connections"\} [1-9]/,
      );
    } finally {
      await Promise.all([first.endAsync(), second.endAsync()]);
    }
    // A slot freed is a slot to take.
    await eventually(async () => {
      const again = await connect(tcp, login()).catch(() => undefined);
      await again?.endAsync();
      return again ? true : undefined;
    });
  });

  it("drops a connection that publishes past MQTT_MAX_TOPIC_LEVELS", async () => {
    const agent = await connect(tcp, login());
    // At the limit (four levels) a publish is taken; one level deeper the connection is dropped.
    await agent.publishAsync(`metrics/${tenant.tenantId}/limited/depth`, "1", { qos: 1 });
    expect(agent.connected).toBe(true);
    const gone = closed(agent);
    agent.publish(`metrics/${tenant.tenantId}/limited/a/b/c`, "1", { qos: 0 });
    await gone;
    expect(agent.connected).toBe(false);
    const stored = await eventually(async () => {
      const { body } = await request(`${t.url}/api/v1/metrics`, { auth: bearer(tenant.viewerToken) });
      return body.items.length > 0 ? body.items : undefined;
    });
    expect(stored.map((row: { name: string }) => row.name)).toEqual(["depth"]);
  });

  it("drops a connection that sends no CONNECT within MQTT_CONNECT_TIMEOUT_MS", async () => {
    const lifetime = await rawConnectionLifetime();
    expect(lifetime).toBeGreaterThanOrEqual(250);
    expect(lifetime).toBeLessThan(5000);
  });

  // Aedes 1.2.0's bound (maxInflightInbound), which 2.0.0-beta.1 lacks (docs/devices.md, "The engine"):
  // without it one client grows the broker's incoming QoS 2 store toward 65,535 entries.
  it("disconnects a 3.1.1 client that leaves more than 1,000 QoS 2 publishes waiting for their PUBREL", async () => {
    const raw = await rawConnect(Number(t.app.mqttPorts?.tcp), { username: "admin", password: t.adminToken });
    const publishes = Array.from({ length: 1001 }, (_, i) => ({
      cmd: "publish" as const,
      topic: "plain/qos2",
      payload: "x",
      qos: 2 as const,
      messageId: i + 1,
      retain: false,
      dup: false,
    }));
    raw.send(...publishes);
    await raw.closed;
    expect(raw.received.filter((p) => p.cmd === "pubrec").length).toBeLessThanOrEqual(1000);
  });
});
