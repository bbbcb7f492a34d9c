import { describe, expect, it } from "vitest";
import { basic, bearer, createTenant, eventually, metricValue, request } from "../helpers/http.ts";
import { connect } from "../helpers/mqtt.ts";
import { distributedNodes } from "../helpers/nodes.ts";
import { distributedUnavailable } from "../helpers/services.ts";
import { openStream } from "../helpers/sse.ts";

const skip = Boolean(await distributedUnavailable());
const ADMIN_TOKEN = `admin-${"c".repeat(40)}`;
const { startNode, sharedBackends, startPair, track } = distributedNodes(ADMIN_TOKEN);

describe.skipIf(skip)("what the console reads", () => {
  it("lists a tenant's agents: connected on any broker, last seen, readings in the last hour; only its own", async () => {
    const [api, broker] = await startPair();
    const acme = await createTenant(api.httpUrl, ADMIN_TOKEN, "pump-1");
    const other = await createTenant(api.httpUrl, ADMIN_TOKEN, "other-agent");
    const admin = bearer(ADMIN_TOKEN);
    await request(`${api.httpUrl}/api/v1/admin/tenants/${acme.tenantId}/agents`, {
      auth: admin,
      body: { agent_id: "pump-2" },
    });
    // On the second broker, which shares nothing with the API process but Redis.
    const pump = track(
      await connect(`mqtt://127.0.0.1:${broker.mqttPorts?.tcp}`, {
        clientId: "pump-1-main",
        username: acme.agent.username,
        password: acme.agent.password,
      }),
    );
    for (const value of [1, 2, 3]) {
      await pump.publishAsync(`metrics/${acme.tenantId}/pump-1/pressure`, String(value), { qos: 1 });
    }
    // An agent that only an ingest token writes for is listed too, as not registered.
    await request(`${api.httpUrl}/api/v1/metrics`, {
      auth: bearer(acme.ingestToken),
      body: { agent_id: "legacy-7", metrics: [{ name: "t", value: 1 }] },
    });

    const agents = await eventually(async () => {
      const page = await request(`${api.httpUrl}/api/v1/agents`, { auth: bearer(acme.viewerToken) });
      const pump1 = page.body.items.find((a: { agent_id: string }) => a.agent_id === "pump-1");
      return pump1?.readings_last_hour === 3 && page.body.items.length === 3 ? page.body : undefined;
    });
    const byId = Object.fromEntries(agents.items.map((a: { agent_id: string }) => [a.agent_id, a]));
    expect(byId["pump-1"]).toMatchObject({ registered: true, connected: true, connections: 1, readings_last_hour: 3 });
    expect(Date.now() - Date.parse(byId["pump-1"].last_seen_at)).toBeLessThan(60_000);
    expect(byId["pump-2"]).toEqual({
      agent_id: "pump-2",
      registered: true,
      connected: false,
      connections: 0,
      last_seen_at: null,
      readings_last_hour: 0,
    });
    expect(byId["legacy-7"]).toMatchObject({ registered: false, connected: false, readings_last_hour: 1 });
    expect(agents.next_cursor).toBeNull();

    const others = await request(`${api.httpUrl}/api/v1/agents`, { auth: bearer(other.viewerToken) });
    expect(others.body.items.map((a: { agent_id: string }) => a.agent_id)).toEqual(["other-agent"]);
    const itself = await request(`${api.httpUrl}/api/v1/agents`, {
      auth: basic(acme.agent.username, acme.agent.password),
    });
    expect(itself.body.items.map((a: { agent_id: string }) => a.agent_id)).toEqual(["pump-1"]);

    const page = await request(`${api.httpUrl}/api/v1/agents?limit=2`, { auth: bearer(acme.viewerToken) });
    expect(page.body.items.map((a: { agent_id: string }) => a.agent_id)).toEqual(["legacy-7", "pump-1"]);
    const next = await request(`${api.httpUrl}/api/v1/agents?limit=2&cursor=${page.body.next_cursor}`, {
      auth: bearer(acme.viewerToken),
    });
    expect(next.body.items.map((a: { agent_id: string }) => a.agent_id)).toEqual(["pump-2"]);

    // Gone from the broker, gone from the list of the connected.
    await pump.endAsync();
    await eventually(async () => {
      const page = await request(`${api.httpUrl}/api/v1/agents?agent_id=pump-1`, { auth: bearer(acme.viewerToken) });
      return page.body.items[0]?.connected === false ? true : undefined;
    });
  });

  it("shows the admin every tenant, its credentials and its connected clients", async () => {
    const [api, broker] = await startPair();
    const admin = bearer(ADMIN_TOKEN);
    const acme = await createTenant(api.httpUrl, ADMIN_TOKEN, "meter-1");
    track(
      await connect(`mqtt://127.0.0.1:${broker.mqttPorts?.tcp}`, {
        clientId: "meter-1-a",
        username: acme.agent.username,
        password: acme.agent.password,
      }),
    );
    track(
      await connect(`mqtt://127.0.0.1:${broker.mqttPorts?.tcp}`, {
        clientId: "wall",
        username: "viewer",
        password: acme.viewerToken,
      }),
    );

    const tenants = await request(`${api.httpUrl}/api/v1/admin/tenants`, { auth: admin });
    expect(tenants.body).toEqual([
      expect.objectContaining({ id: acme.tenantId, name: "test tenant", agents: 1, active_credentials: 3 }),
    ]);

    const clients = await request(`${api.httpUrl}/api/v1/admin/tenants/${acme.tenantId}/clients`, { auth: admin });
    expect(clients.body).toEqual(
      expect.arrayContaining([
        expect.objectContaining({ client_id: "meter-1-a", kind: "agent", agent_id: "meter-1", username: null }),
        expect.objectContaining({ client_id: "wall", kind: "viewer", agent_id: null }),
      ]),
    );
    expect(clients.body).toHaveLength(2);

    await request(`${api.httpUrl}/api/v1/admin/credentials/${acme.agent.username}`, { method: "DELETE", auth: admin });
    const credentials = await request(`${api.httpUrl}/api/v1/admin/tenants/${acme.tenantId}/credentials`, {
      auth: admin,
    });
    expect(credentials.body).toHaveLength(3);
    const agentCredential = credentials.body.find((c: { username: string }) => c.username === acme.agent.username);
    expect(agentCredential).toMatchObject({ role: "agent", agent_id: "meter-1" });
    expect(agentCredential.revoked_at).not.toBeNull();
    expect(JSON.stringify(credentials.body)).not.toContain(acme.agent.password);
    // Revoked: its connection is closed on the other broker too.
    await eventually(async () => {
      const now = await request(`${api.httpUrl}/api/v1/admin/tenants/${acme.tenantId}/clients`, { auth: admin });
      return now.body.length === 1 ? true : undefined;
    });

    const viewer = await request(`${api.httpUrl}/api/v1/admin/tenants`, { auth: bearer(acme.viewerToken) });
    expect(viewer.status).toBe(403);
  });

  it("says who a credential is, and where devices connect", async () => {
    const shared = await sharedBackends();
    const api = await startNode({ ...shared, MQTT_PORT: "0" });
    const acme = await createTenant(api.httpUrl, ADMIN_TOKEN, "probe-1");
    const admin = await request(`${api.httpUrl}/api/v1/whoami`, { auth: bearer(ADMIN_TOKEN) });
    expect(admin.body).toEqual({ kind: "admin", mqtt: { port: api.mqttPorts?.tcp, ws_port: api.mqttPorts?.ws } });
    const viewer = await request(`${api.httpUrl}/api/v1/whoami`, { auth: bearer(acme.viewerToken) });
    expect(viewer.body).toMatchObject({
      kind: "token",
      role: "viewer",
      tenant_id: acme.tenantId,
      tenant_name: "test tenant",
    });
    const agent = await request(`${api.httpUrl}/api/v1/whoami`, { auth: acme.agent.auth });
    expect(agent.body).toMatchObject({ kind: "agent", agent_id: "probe-1", tenant_id: acme.tenantId });
    expect((await request(`${api.httpUrl}/api/v1/whoami`, { auth: bearer("tk_nobody.secret") })).status).toBe(401);
  });

  it("streams a tenant's rejections with their reasons, from every broker and the HTTP API, to that tenant only", async () => {
    const [api, broker] = await startPair();
    const acme = await createTenant(api.httpUrl, ADMIN_TOKEN, "sensor-1");
    const other = await createTenant(api.httpUrl, ADMIN_TOKEN, "sensor-9");
    const stream = await openStream(`${api.httpUrl}/api/v1/stream?include=rejections`, {
      authorization: bearer(acme.viewerToken),
    });
    const otherStream = await openStream(`${api.httpUrl}/api/v1/stream?include=metrics,rejections`, {
      authorization: bearer(other.viewerToken),
    });
    const sensor = track(
      await connect(`mqtt://127.0.0.1:${broker.mqttPorts?.tcp}`, {
        username: acme.agent.username,
        password: acme.agent.password,
      }),
    );
    await sensor.publishAsync(`metrics/${acme.tenantId}/sensor-1/temp`, '{"value": "hot"}', { qos: 1 });
    await request(`${api.httpUrl}/api/v1/metrics`, {
      auth: acme.agent.auth,
      body: {
        metrics: [
          { name: "temp", value: 1 },
          { name: "bad name!", value: 2 },
          { name: "x y", value: 3 },
        ],
      },
    });

    const events = await stream.waitFor(2);
    expect(events.map((e) => e.event)).toEqual(["rejection", "rejection"]);
    const bySource = Object.fromEntries(events.map((e) => [e.data.source, e.data]));
    expect(bySource.mqtt).toMatchObject({
      agent_id: "sensor-1",
      reason: "bad_value",
      count: 1,
      topic: `metrics/${acme.tenantId}/sensor-1/temp`,
    });
    expect(bySource.mqtt.message).toMatch(/value/);
    expect(bySource.http).toMatchObject({ agent_id: "sensor-1", reason: "bad_name", count: 2 });
    expect(await metricValue(api.httpUrl, "edge_ingest_metrics_rejected_total", { source: "http" })).toBe(2);

    // The other tenant's stream saw none of it (its metrics included).
    expect(otherStream.events).toEqual([]);
    stream.close();
    otherStream.close();
  });
});

describe.skipIf(skip)("every process can be probed and scraped", () => {
  it("serves /healthz, /readyz and /metrics with only the worker role or only the broker role, and no API", async () => {
    const shared = await sharedBackends();
    const worker = await startNode({ ...shared, ROLES: "worker" });
    const broker = await startNode({ ...shared, ROLES: "broker", MIGRATE_ON_START: "false" });
    for (const node of [worker, broker]) {
      expect((await request(`${node.httpUrl}/healthz`)).body).toEqual({ status: "ok" });
      const ready = await request(`${node.httpUrl}/readyz`);
      expect(ready.status).toBe(200);
      expect(ready.body.checks).toMatchObject({ database: "ok", queue: "ok", redis: "ok" });
      expect((await request(`${node.httpUrl}/api/v1/metrics`)).status).toBe(404);
      expect((await request(`${node.httpUrl}/`)).status).toBe(404);
    }
    const workerMetrics = (await request<string>(`${worker.httpUrl}/metrics`)).body;
    expect(workerMetrics).toContain("edge_ingest_worker_batch_duration_seconds_bucket");
    expect(workerMetrics).toContain("nodejs_eventloop_lag_seconds");
    const brokerMetrics = (await request<string>(`${broker.httpUrl}/metrics`)).body;
    expect(brokerMetrics).toContain("edge_ingest_mqtt_connections 0");
    expect(brokerMetrics).toContain("edge_ingest_mqtt_puback_seconds_bucket");
  });
});
