import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type Mode, startTestApp, type TestApp } from "../helpers/app.ts";
import { bearer, createTenant, eventually, request, type TenantFixture } from "../helpers/http.ts";
import { connackOf, connect, inbox, sleep, subscribeGrants } from "../helpers/mqtt.ts";
import { connackFor, connectBytes, rawConnect } from "../helpers/raw-mqtt.ts";
import { distributedUnavailable } from "../helpers/services.ts";

const skipDistributed = Boolean(await distributedUnavailable());

for (const { mode, skip } of [
  { mode: "embedded" as Mode, skip: false },
  { mode: "distributed" as Mode, skip: skipDistributed },
]) {
  describe.skipIf(skip)(`MQTT 3.1.1 conformance (${mode})`, () => {
    let t: TestApp;
    let tenant: TenantFixture;
    let tcp: string;
    let port: number;
    beforeAll(async () => {
      t = await startTestApp(mode, { MQTT_ALLOW_ANONYMOUS: "true" });
      tenant = await createTenant(t.url, t.adminToken, "dev");
      port = Number(t.app.mqttPorts?.tcp);
      tcp = `mqtt://127.0.0.1:${port}`;
    });
    afterAll(() => t?.cleanup());
    const login = () => ({ username: tenant.agent.username, password: tenant.agent.password });

    it("refuses an empty client id with CleanSession=0 (CONNACK 2, MQTT-3.1.3-8) and takes it with CleanSession=1", async () => {
      // mqtt.js and mqtt-packet refuse to write it: CleanSession is cleared by hand (flags byte, bit 1).
      const persistentWithoutId = connectBytes({ clientId: "", ...login() }, (bytes) => {
        bytes[9] = (bytes[9] as number) & ~0x02;
      });
      expect(await connackFor(port, persistentWithoutId)).toBe(2);
      const client = await rawConnect(port, { ...login(), clientId: "", clean: true });
      client.socket.destroy();
    });

    it("tells a client resuming a persistent session that it has one, subscriptions or not (MQTT-3.2.2-2)", async () => {
      const sessionPresent = async (clean: boolean) => {
        const client = await rawConnect(port, { ...login(), clientId: "persistent-1", clean });
        const connack = client.received.find((p) => p.cmd === "connack") as { sessionPresent: boolean };
        client.send({ cmd: "disconnect" });
        await client.closed;
        return connack.sessionPresent;
      };
      expect(await sessionPresent(false)).toBe(false);
      expect(await eventually(async () => ((await sessionPresent(false)) ? true : undefined))).toBe(true);
      // A clean session ends the stored one.
      expect(await sessionPresent(true)).toBe(false);
      expect(await sessionPresent(false)).toBe(false);
    });

    it("grants an anonymous client any filter, and delivers plain topics only: never a tenant's metric, feedback or $SYS", async () => {
      const anonymous = await connect(tcp);
      const seen = inbox(anonymous);
      expect(await subscribeGrants(anonymous, ["#", "+/+", "metrics/#", "ingest/#", "$SYS/#"])).toEqual([
        1, 1, 1, 1, 1,
      ]);
      // The messages it must not get do exist: the tenant's own viewer and agent see them.
      const viewer = await connect(tcp, { username: "viewer", password: tenant.viewerToken });
      const viewed = inbox(viewer);
      await viewer.subscribeAsync(`metrics/${tenant.tenantId}/#`);
      const agent = await connect(tcp, login());
      const feedback = inbox(agent);
      await agent.subscribeAsync(`ingest/${tenant.tenantId}/dev/errors`);
      await agent.publishAsync(`metrics/${tenant.tenantId}/dev/rpm`, "7", { qos: 1 });
      await agent.publishAsync(`metrics/${tenant.tenantId}/dev/rpm`, "not json", { qos: 1 });
      await viewed.waitFor(1);
      await feedback.waitFor(1);
      await anonymous.publishAsync("plain/hello", "hi", { qos: 1 });
      await seen.waitFor(1, "plain/hello");
      await sleep(300);
      expect(new Set(seen.messages.map((m) => m.topic))).toEqual(new Set(["plain/hello"]));
      await Promise.all([anonymous, viewer, agent].map((client) => client.endAsync()));
    });

    it("answers a NUL byte or invalid UTF-8 in each field a client controls with its protocol answer", async () => {
      const nul = "\u0000";
      // CONNECT fields: identifier rejected, or bad username or password.
      expect(await connackOf(tcp, { ...login(), clientId: `a${nul}b` })).toBe(2);
      expect(await connackOf(tcp, { username: `ag_${nul}${tenant.agent.username.slice(4)}`, password: "x" })).toBe(4);
      expect(
        await connackOf(tcp, { username: tenant.agent.username, password: `${tenant.agent.password}${nul}` }),
      ).toBe(4);
      const [tokenUser, tokenSecret] = tenant.viewerToken.split(".");
      expect(await connackOf(tcp, { username: "viewer", password: `${tokenUser}${nul}.${tokenSecret}` })).toBe(4);
      const invalidUtf8 = connectBytes({ clientId: "XX" }, (bytes) => bytes.set([0xc3, 0x28], bytes.length - 2));
      expect(await connackFor(port, invalidUtf8)).toBe(2);

      // Topic and payload strings: named rejections, the valid reading beside them stored.
      const agent = await connect(tcp, login());
      const feedback = inbox(agent);
      await agent.subscribeAsync(`ingest/${tenant.tenantId}/dev/errors`);
      await agent.publishAsync(`metrics/${tenant.tenantId}/dev/na${nul}me`, "1", { qos: 1 });
      await agent.publishAsync(
        `metrics/${tenant.tenantId}/dev/nul`,
        JSON.stringify([
          { value: 1, dedupe_id: `d${nul}` },
          { value: 2, dedupe_id: "\ud800" },
          { value: 3, tags: { [`k${nul}`]: "v" } },
          { value: 4, tags: { k: `v${nul}` } },
          { value: 5, dedupe_id: "fine" },
        ]),
        { qos: 1 },
      );
      // A reason's second refusal waits for the next tick of the feedback coalescer: add up the counts.
      const refusals = await eventually(async () => {
        const tally: Record<string, number> = {};
        for (const { payload } of feedback.messages) {
          const { reason, count } = JSON.parse(payload);
          tally[reason] = (tally[reason] ?? 0) + count;
        }
        return Object.values(tally).reduce((sum, n) => sum + n, 0) === 5 ? tally : undefined;
      });
      expect(refusals).toEqual({ bad_dedupe_id: 2, bad_tags: 2, bad_topic: 1 });
      const stored = await eventually(async () => {
        const { body } = await request(`${t.url}/api/v1/metrics?name=nul`, { auth: bearer(tenant.viewerToken) });
        return body.items?.length === 1 ? body.items : undefined;
      });
      expect(stored[0]).toMatchObject({ value: 5, dedupe_id: "fine" });
      await agent.endAsync();
    });
  });
}
