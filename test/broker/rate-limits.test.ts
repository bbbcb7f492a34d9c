import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type Mode, startTestApp, type TestApp } from "../helpers/app.ts";
import { createTenant, eventually, metricValue, type TenantFixture } from "../helpers/http.ts";
import { connect, sleep } from "../helpers/mqtt.ts";
import { distributedNodes } from "../helpers/nodes.ts";
import { publishes, rawConnect } from "../helpers/raw-mqtt.ts";
import { distributedUnavailable } from "../helpers/services.ts";

const skipDistributed = Boolean(await distributedUnavailable());
const ADMIN_TOKEN = `admin-${"y".repeat(40)}`;
const RATE = 1000;
const FLOOD = 8000;
const accepted = (url: string) => metricValue(url, "edge_ingest_metrics_accepted_total", { source: "mqtt" });

/** Floods `count` QoS 0 readings from a bare socket, all written at once; returns the socket's owner. */
async function flood(port: number, fixture: TenantFixture, count: number) {
  const flooder = await rawConnect(port, { username: fixture.agent.username, password: fixture.agent.password });
  flooder.socket.write(publishes(`metrics/${fixture.tenantId}/${fixture.agent.agentId}/flood`, "1", count));
  return flooder;
}

for (const { mode, skip } of [
  { mode: "embedded" as Mode, skip: false },
  { mode: "distributed" as Mode, skip: skipDistributed },
]) {
  describe.skipIf(skip)(`rate limits (${mode})`, () => {
    let t: TestApp;
    beforeAll(async () => {
      t = await startTestApp(mode, {
        AGENT_MAX_READINGS_PER_SECOND: String(RATE),
        AGENT_READINGS_BURST: String(RATE),
      });
    });
    afterAll(() => t?.cleanup());

    it("holds a flooding agent to its rate, without dropping a reading, while another tenant's publishes are acknowledged", async () => {
      const a = await createTenant(t.url, t.adminToken, "flooder");
      const b = await createTenant(t.url, t.adminToken, "steady");
      const port = Number(t.app.mqttPorts?.tcp);
      const steady = await connect(`mqtt://127.0.0.1:${port}`, {
        username: b.agent.username,
        password: b.agent.password,
      });
      const before = await accepted(t.url);
      let steadyAcknowledged = 0;
      const flooded = async () => (await accepted(t.url)) - before - steadyAcknowledged;
      const flooder = await flood(port, a, FLOOD);
      const started = Date.now();
      let atOne: number | undefined;
      while (Date.now() - started < 4000) {
        await steady.publishAsync(`metrics/${b.tenantId}/steady/tick`, "1", { qos: 1 });
        steadyAcknowledged++;
        if (atOne === undefined && Date.now() - started >= 1000) atOne = await flooded();
        await sleep(10);
      }
      const rate = ((await flooded()) - (atOne as number)) / ((Date.now() - started - 1000) / 1000);
      // The steady agent kept being acknowledged (unthrottled, one publish every ~10 ms: some 300 in 4 s).
      expect(steadyAcknowledged, "steady publishes acknowledged").toBeGreaterThan(100);
      // After its burst, the flooder is taken at its rate (within 10 %).
      expect(rate, "flooder readings/s").toBeLessThanOrEqual(RATE * 1.1);
      expect(rate, "flooder readings/s").toBeGreaterThan(RATE * 0.5);
      // Held back, not dropped: every reading is taken in the end.
      await eventually(async () => ((await flooded()) === FLOOD ? true : undefined), 20_000);
      expect(
        await metricValue(t.url, "edge_ingest_throttled_seconds_total", { tenant_id: a.tenantId }),
      ).toBeGreaterThan(2);
      expect(await metricValue(t.url, "edge_ingest_throttled_seconds_total", { tenant_id: b.tenantId })).toBe(0);
      flooder.socket.destroy();
      await steady.endAsync();
    }, 40_000);
  });
}

describe.skipIf(skipDistributed)("a tenant's rate across brokers", () => {
  const { startNode, sharedBackends } = distributedNodes(ADMIN_TOKEN);

  it("holds the tenant's agents on two brokers together to the tenant's rate", async () => {
    const shared = await sharedBackends();
    const limits = { TENANT_MAX_READINGS_PER_SECOND: String(RATE), TENANT_READINGS_BURST: String(RATE) };
    const first = await startNode({ ...shared, ...limits, ROLES: "api,broker,worker" });
    const second = await startNode({ ...shared, ...limits, ROLES: "api,broker" });
    const url = first.httpUrl;
    const one = await createTenant(url, ADMIN_TOKEN, "one");
    const agentTwo = await fetch(`${url}/api/v1/admin/tenants/${one.tenantId}/agents`, {
      method: "POST",
      headers: { authorization: `Bearer ${ADMIN_TOKEN}`, "content-type": "application/json" },
      body: JSON.stringify({ agent_id: "two" }),
    }).then((response) => response.json() as Promise<{ username: string; password: string }>);
    const two: TenantFixture = { ...one, agent: { ...one.agent, agentId: "two", ...agentTwo } };

    const floods = [
      await flood(Number(first.mqttPorts?.tcp), one, FLOOD),
      await flood(Number(second.mqttPorts?.tcp), two, FLOOD),
    ];
    const taken = async () => (await accepted(url)) + (await accepted(second.httpUrl));
    await sleep(1000);
    const atOne = await taken();
    await sleep(3000);
    // Each agent alone would be taken at its own 1,000/s: together they get the tenant's 1,000/s.
    expect(((await taken()) - atOne) / 3).toBeLessThanOrEqual(RATE * 1.1);
    expect(((await taken()) - atOne) / 3).toBeGreaterThan(RATE * 0.5);
    for (const client of floods) client.socket.destroy();
  });
});
