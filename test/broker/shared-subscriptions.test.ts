import { spawn } from "node:child_process";
import { fileURLToPath } from "node:url";
import type { MqttClient } from "mqtt";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import type { RunningApp } from "../../src/app.ts";
import { MQTT5 } from "../../src/ingest/refusals.ts";
import { startTestApp, type TestApp } from "../helpers/app.ts";
import { createTenant, eventually, metricValue, type TenantFixture } from "../helpers/http.ts";
import { connect, inbox, sleep, subscribeGrants } from "../helpers/mqtt.ts";
import { distributedNodes } from "../helpers/nodes.ts";
import { pythonWith } from "../helpers/python.ts";
import { rawConnect, waitFor } from "../helpers/raw-mqtt.ts";
import { distributedUnavailable } from "../helpers/services.ts";

const hasMosquittoSub = await new Promise<boolean>((resolve) =>
  spawn("mosquitto_sub", ["--help"])
    .on("error", () => resolve(false))
    .on("exit", () => resolve(true)),
);
if (!hasMosquittoSub && process.env.CI === "true") throw new Error("CI=true but mosquitto_sub is not installed");

const PAHO_SHARED = fileURLToPath(new URL("./paho_shared.py", import.meta.url));
const python = await pythonWith(["paho-mqtt>=2,<3"]);

/** What each member got, by its name: every message must be in exactly one of them. */
function expectEachOnce(got: Record<string, string[]>, expected: string[]): void {
  const all = Object.values(got).flat();
  expect(all.sort()).toEqual([...expected].sort());
}

const sequence = (count: number, prefix = "m") => Array.from({ length: count }, (_, i) => `${prefix}-${i}`);

describe("shared subscriptions, one broker", () => {
  let t: TestApp;
  let tcp: string;
  const clients: MqttClient[] = [];
  beforeAll(async () => {
    t = await startTestApp("embedded", { MQTT_SHARED_MAX_INFLIGHT: "5" });
    tcp = `mqtt://127.0.0.1:${t.app.mqttPorts?.tcp}`;
  });
  afterEach(async () => {
    for (const client of clients.splice(0)) await client.endAsync(true);
  });
  afterAll(async () => t?.cleanup());

  const asAdmin = async (options = {}) => {
    const client = await connect(tcp, { username: "admin", password: t.adminToken, ...options });
    clients.push(client);
    return client;
  };

  it("gives each message to one member, MQTT 5 and 3.1.1 alike, while a plain subscriber gets every one", async () => {
    const v5 = await asAdmin({ protocolVersion: 5 });
    const v311 = await asAdmin({ protocolVersion: 4 });
    const everyone = await asAdmin();
    const [v5Inbox, v311Inbox, everyoneInbox] = [inbox(v5), inbox(v311), inbox(everyone)];
    expect(await subscribeGrants(v5, ["$share/workers/jobs/#"])).toEqual([1]);
    expect(await subscribeGrants(v311, ["$share/workers/jobs/#"])).toEqual([1]);
    await everyone.subscribeAsync("jobs/#", { qos: 1 });
    const publisher = await asAdmin();
    const expected = sequence(60);
    for (const payload of expected) await publisher.publishAsync(`jobs/${payload}`, payload, { qos: 1 });

    await everyoneInbox.waitFor(60);
    await eventually(async () => (v5Inbox.messages.length + v311Inbox.messages.length >= 60 ? true : undefined));
    await sleep(200);
    const got = { v5: v5Inbox.messages.map((m) => m.payload), v311: v311Inbox.messages.map((m) => m.payload) };
    expectEachOnce(got, expected);
    expect(got.v5.length).toBeGreaterThan(10);
    expect(got.v311.length).toBeGreaterThan(10);
    // The topic is the publisher's, not the share's.
    expect(v5Inbox.messages[0]?.topic).toMatch(/^jobs\/m-/);
  });

  it("loses nothing while members join a group that is taking messages", async () => {
    const first = await asAdmin({ protocolVersion: 5 });
    const firstInbox = inbox(first);
    await first.subscribeAsync("$share/growing/flow/#", { qos: 1 });
    const publisher = await asAdmin();
    const expected = sequence(90, "flow");
    const inboxes = [firstInbox];
    for (const [i, payload] of expected.entries()) {
      if (i === 30 || i === 60) {
        const joining = await asAdmin({ protocolVersion: i === 30 ? 4 : 5 });
        inboxes.push(inbox(joining));
        await joining.subscribeAsync("$share/growing/flow/#", { qos: 1 });
      }
      await publisher.publishAsync(`flow/${payload}`, payload, { qos: 1 });
    }
    const all = () => inboxes.flatMap((each) => each.messages.map((m) => m.payload));
    await eventually(async () => (all().length >= 90 ? true : undefined));
    await sleep(200);
    expect(all().sort()).toEqual([...expected].sort());
    expect(inboxes[2]?.messages.length).toBeGreaterThan(0);
  });

  it("gives what a member held unacknowledged to another when its connection ends", async () => {
    const port = t.app.mqttPorts?.tcp as number;
    const holder = await rawConnect(port, { username: "admin", password: t.adminToken });
    holder.send({ cmd: "subscribe", messageId: 1, subscriptions: [{ topic: "$share/g/held/#", qos: 1 }] });
    await waitFor(holder.received, (p) => p.cmd === "suback");
    const publisher = await asAdmin();
    const expected = sequence(5, "held");
    for (const payload of expected) await publisher.publishAsync(`held/${payload}`, payload, { qos: 1 });
    // The holder never acknowledges: it holds its in-flight bound (MQTT_SHARED_MAX_INFLIGHT=5).
    await eventually(async () => (holder.received.filter((p) => p.cmd === "publish").length === 5 ? true : undefined));

    const redeliveredBefore = await metricValue(t.url, "edge_ingest_mqtt_shared_redelivered_total");
    const taker = await asAdmin({ protocolVersion: 5 });
    const takerInbox = inbox(taker);
    await taker.subscribeAsync("$share/g/held/#", { qos: 1 });
    await sleep(300);
    expect(takerInbox.messages).toEqual([]);
    holder.socket.destroy();
    const got = await takerInbox.waitFor(5);
    expect(got.map((m) => m.payload).sort()).toEqual([...expected].sort());
    expect(await metricValue(t.url, "edge_ingest_mqtt_shared_redelivered_total")).toBe(redeliveredBefore + 5);
  });

  it("keeps the group's messages for a persistent member while it is away, and hands them over when it is back", async () => {
    const session = {
      protocolVersion: 5 as const,
      clientId: "shared-persistent",
      clean: false,
      properties: { sessionExpiryInterval: 60 },
    };
    const member = await asAdmin(session);
    await member.subscribeAsync("$share/keep/away/#", { qos: 1 });
    await member.endAsync();
    const publisher = await asAdmin();
    const expected = sequence(3, "away");
    for (const payload of expected) await publisher.publishAsync(`away/${payload}`, payload, { qos: 1 });

    // Back without subscribing again: the session holds the shared subscription.
    const back = await asAdmin(session);
    const got = await inbox(back).waitFor(3);
    expect(got.map((m) => m.payload).sort()).toEqual([...expected].sort());
  });

  it("judges the filter after the share name by the principal's rights, and refuses one that is not a share", async () => {
    const a = await createTenant(t.url, t.adminToken, "dev-1");
    const b = await createTenant(t.url, t.adminToken, "dev-1");
    const viewer = await connect(tcp, { protocolVersion: 5, username: "viewer", password: a.viewerToken });
    clients.push(viewer);
    expect(
      await subscribeGrants(viewer, [
        `$share/g/metrics/${a.tenantId}/#`,
        `$share/g/metrics/${b.tenantId}/#`,
        "$share/g/#",
      ]),
    ).toEqual([1, MQTT5.NOT_AUTHORIZED, MQTT5.NOT_AUTHORIZED]);
    const v311 = await rawConnect(t.app.mqttPorts?.tcp as number, { username: "viewer", password: a.viewerToken });
    v311.send({
      cmd: "subscribe",
      messageId: 3,
      subscriptions: [
        { topic: "$share/g", qos: 1 },
        { topic: `$share/g/metrics/${a.tenantId}/+/cpu`, qos: 2 },
      ],
    });
    const suback = await waitFor(v311.received, (p) => p.cmd === "suback");
    // Shared subscriptions are granted at most QoS 1.
    expect((suback as { granted: number[] }).granted).toEqual([128, 1]);
    v311.socket.destroy();
  });
});

describe("shared subscriptions, a full group", () => {
  it("keeps no more than MQTT_SHARED_QUEUE_MAX_MESSAGES for a group, counts the rest, and takes more once members acknowledge", async () => {
    const t = await startTestApp("embedded", { MQTT_SHARED_QUEUE_MAX_MESSAGES: "2" });
    try {
      const login = { username: "admin", password: t.adminToken };
      const holder = await rawConnect(t.app.mqttPorts?.tcp as number, login);
      holder.send({ cmd: "subscribe", messageId: 1, subscriptions: [{ topic: "$share/g/full/#", qos: 1 }] });
      await waitFor(holder.received, (p) => p.cmd === "suback");
      const publisher = await connect(`mqtt://127.0.0.1:${t.app.mqttPorts?.tcp}`, login);
      for (const payload of sequence(5, "full")) await publisher.publishAsync(`full/${payload}`, payload, { qos: 1 });
      const held = () =>
        holder.received.filter((p) => p.cmd === "publish") as { messageId?: number; payload: Buffer }[];
      await eventually(async () => (held().length === 2 ? true : undefined));
      expect(await metricValue(t.url, "edge_ingest_mqtt_shared_dropped_total")).toBe(3);
      // Acknowledged, the two make room: the next message is kept and delivered.
      for (const packet of held()) holder.send({ cmd: "puback", messageId: packet.messageId as number });
      await sleep(200);
      await publisher.publishAsync("full/later", "later", { qos: 1 });
      await eventually(async () => (held().length === 3 ? true : undefined));
      expect(held()[2]?.payload.toString()).toBe("later");
      expect(await metricValue(t.url, "edge_ingest_mqtt_shared_dropped_total")).toBe(3);
      holder.socket.destroy();
      await publisher.endAsync();
    } finally {
      await t.cleanup();
    }
  });
});

const skipDistributed = Boolean(await distributedUnavailable());
const ADMIN_TOKEN = `admin-${"s".repeat(40)}`;

describe.skipIf(skipDistributed)("shared subscriptions across brokers", () => {
  const { startNode, sharedBackends, track, cleanups } = distributedNodes(ADMIN_TOKEN);
  const tcpOf = (app: RunningApp) => `mqtt://127.0.0.1:${app.mqttPorts?.tcp}`;

  async function twoBrokers(env: Record<string, string> = {}): Promise<[RunningApp, RunningApp]> {
    const shared = { ...(await sharedBackends()), ...env };
    return [await startNode(shared), await startNode({ ...shared, ROLES: "broker" })];
  }

  /** A member in a process of its own that prints each message's payload a line, until the test ends. */
  function lineMember(command: string, args: string[]): { lines: string[]; payloads(): string[] } {
    const lines: string[] = [];
    const child = spawn(command, args);
    let rest = "";
    child.stdout.on("data", (chunk: Buffer) => {
      const parts = (rest + chunk.toString()).split("\n");
      rest = parts.pop() ?? "";
      lines.push(...parts.filter((line) => line.length > 0));
    });
    cleanups.push(async () => {
      child.kill();
    });
    return { lines, payloads: () => lines.filter((line) => line.startsWith("{")) };
  }

  const mosquittoSub = (app: RunningApp, login: [string, string], filter: string) =>
    lineMember("stdbuf", [
      ...["-oL", "mosquitto_sub", "-V", "mqttv5", "-h", "127.0.0.1", "-p", String(app.mqttPorts?.tcp)],
      ...["-u", login[0], "-P", login[1], "-q", "1", "-t", filter],
    ]);

  const pahoMember = (python: string, app: RunningApp, login: [string, string], filter: string) =>
    lineMember(python, [PAHO_SHARED, "127.0.0.1", String(app.mqttPorts?.tcp), ...login, filter, "60"]);

  it.skipIf(!hasMosquittoSub)(
    "gives each stored reading to one member of a tenant's group (mqtt.js, mosquitto_sub, paho), whichever broker it is on, and nothing to another tenant's",
    async () => {
      // A member holds at most 2 unacknowledged: the readings spread over the brokers.
      const [first, second] = await twoBrokers({ MQTT_SHARED_MAX_INFLIGHT: "2" });
      const a: TenantFixture = await createTenant(first.httpUrl, ADMIN_TOKEN, "dev-1");
      const b: TenantFixture = await createTenant(first.httpUrl, ADMIN_TOKEN, "dev-1");
      const filter = `$share/dashboards/metrics/${a.tenantId}/+/level`;
      const onFirst = track(
        await connect(tcpOf(first), { protocolVersion: 5, username: "viewer", password: a.viewerToken }),
      );
      const firstInbox = inbox(onFirst);
      await onFirst.subscribeAsync(filter, { qos: 1 });
      const onSecond = mosquittoSub(second, ["viewer", a.viewerToken], filter);
      const paho = python ? pahoMember(python, second, ["viewer", a.viewerToken], filter) : undefined;
      if (paho) await eventually(async () => (paho.lines.includes("SUBACK 1") ? true : undefined));
      const otherTenant = track(
        await connect(tcpOf(second), { protocolVersion: 4, username: "viewer", password: b.viewerToken }),
      );
      const otherInbox = inbox(otherTenant);
      await otherTenant.subscribeAsync(`$share/dashboards/metrics/${b.tenantId}/#`, { qos: 1 });
      // mosquitto_sub has joined once the group has two members here.
      await sleep(1000);

      const agent = track(
        await connect(tcpOf(first), { username: a.agent.username, password: a.agent.password, protocolVersion: 5 }),
      );
      // All at once, so more wait in the group than one broker's members may hold unacknowledged:
      // the rest go to the other broker's (which broker reads first is a race, not a turn).
      const values = Array.from({ length: 40 }, (_, i) => i);
      await Promise.all(
        values.map((value) =>
          agent.publishAsync(`metrics/${a.tenantId}/dev-1/level`, JSON.stringify({ value }), { qos: 1 }),
        ),
      );
      const got = () => ({
        mqttjs: firstInbox.messages.map((m) => String(JSON.parse(m.payload).value)),
        mosquitto: onSecond.payloads().map((line) => String(JSON.parse(line).value)),
        paho: (paho?.payloads() ?? []).map((line) => String(JSON.parse(line).value)),
      });
      await eventually(async () => (Object.values(got()).flat().length >= 40 ? true : undefined), 20_000);
      await sleep(500);
      expectEachOnce(got(), values.map(String));
      expect(got().mqttjs.length).toBeGreaterThan(0);
      expect(got().mosquitto.length).toBeGreaterThan(0);
      if (paho) expect(got().paho.length).toBeGreaterThan(0);
      expect(otherInbox.messages).toEqual([]);
    },
  );

  it("gives each plain message to one member across brokers, and what a departing member held to the others", async () => {
    const [first, second] = await twoBrokers({ MQTT_SHARED_MAX_INFLIGHT: "3" });
    const login = { username: "admin", password: ADMIN_TOKEN };
    const steady = track(await connect(tcpOf(first), { ...login, protocolVersion: 5 }));
    const steadyInbox = inbox(steady);
    await steady.subscribeAsync("$share/g/orders/#", { qos: 1 });
    // A member on the other broker that takes messages and never acknowledges them.
    const holder = await rawConnect(second.mqttPorts?.tcp as number, login);
    cleanups.push(async () => holder.socket.destroy());
    holder.send({ cmd: "subscribe", messageId: 1, subscriptions: [{ topic: "$share/g/orders/#", qos: 1 }] });
    await waitFor(holder.received, (p) => p.cmd === "suback");

    const publisher = track(await connect(tcpOf(second), login));
    const expected = sequence(30, "order");
    for (const payload of expected) await publisher.publishAsync(`orders/${payload}`, payload, { qos: 1 });
    const held = () => holder.received.filter((p) => p.cmd === "publish").length;
    // Whichever broker reads first takes more; the holder's holds at least one, never past its bound.
    await eventually(
      async () => (held() >= 1 && steadyInbox.messages.length + held() >= 30 ? true : undefined),
      15_000,
    );
    expect(held()).toBeLessThanOrEqual(3);

    holder.socket.destroy();
    const got = await steadyInbox.waitFor(30, undefined, 15_000);
    expect(got.map((m) => m.payload).sort()).toEqual([...expected].sort());
  });
});
