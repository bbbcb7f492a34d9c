import { Redis } from "ioredis";
import pg from "pg";
import { describe, expect, it } from "vitest";
import { REFUSALS } from "../../src/ingest/refusals.ts";
import { hasOpenssl, issue, selfSigned } from "../helpers/certificates.ts";
import { bearer, createTenant, request } from "../helpers/http.ts";
import { connackOf, connect, disconnectCode, sleep } from "../helpers/mqtt.ts";
import { distributedNodes } from "../helpers/nodes.ts";
import { startOwnRedis } from "../helpers/redis-server.ts";
import { createTestDatabase, distributedUnavailable, tempDir } from "../helpers/services.ts";

const skip = Boolean(await distributedUnavailable()) || !(await hasOpenssl());
const ADMIN_TOKEN = `admin-${"c".repeat(40)}`;
const { cleanups, startNode, sharedBackends, track } = distributedNodes(ADMIN_TOKEN);

/** A server certificate and the TLS settings of a node that identifies devices by certificate. */
async function tlsEnv() {
  const { dir, remove } = await tempDir();
  cleanups.push(remove);
  const server = await selfSigned(dir, "server", "localhost");
  return {
    dir,
    env: {
      MQTT_TLS_CERT_FILE: server.certFile,
      MQTT_TLS_KEY_FILE: server.keyFile,
      MQTT_TLS_PORT: "0",
      MQTT_WSS_PORT: "0",
      MQTT_TLS_CLIENT_AUTH: "optional",
    },
  };
}

const asDevice = (device: { key: string; pem: string }) => ({
  protocolVersion: 5 as const,
  key: device.key,
  cert: device.pem,
  rejectUnauthorized: false,
});

describe.skipIf(skip)("device certificates across brokers", () => {
  it("removing a tenant CA on one node ends its devices' connections on another broker", async () => {
    const { dir, env } = await tlsEnv();
    const shared = await sharedBackends();
    const api = await startNode({ ...shared, ...env });
    const broker = await startNode({ ...shared, ...env, ROLES: "broker" });
    const tenant = await createTenant(api.httpUrl, ADMIN_TOKEN);
    const ca = await selfSigned(dir, "ca", "Fleet CA", { ca: true });
    const added = await request(`${api.httpUrl}/api/v1/admin/tenants/${tenant.tenantId}/cas`, {
      auth: bearer(ADMIN_TOKEN),
      body: { pem: ca.pem, register_agents: true },
    });
    expect(added.status).toBe(201);
    const device = await issue(dir, ca, "device", "far-1");
    const url = `mqtts://127.0.0.1:${broker.mqttPorts?.tls}`;
    const client = track(await connect(url, asDevice(device)));
    const cut = disconnectCode(client);
    const removed = await request(
      `${api.httpUrl}/api/v1/admin/tenants/${tenant.tenantId}/cas/${added.body.fingerprint}`,
      { method: "DELETE", auth: bearer(ADMIN_TOKEN) },
    );
    expect(removed.status).toBe(204);
    expect(await cut).toBe(REFUSALS.revoked.mqtt5);
    expect(await connackOf(url, asDevice(device))).toBe(REFUSALS.bad_certificate.mqtt5);
  });

  it("a CA removed while the broker's subscriptions were lost ends its devices' connections once they are back", async () => {
    const { dir, env } = await tlsEnv();
    const redis = await startOwnRedis();
    cleanups.push(() => redis.remove());
    const db = await createTestDatabase();
    cleanups.push(db.drop);
    const app = await startNode({ DATABASE_URL: db.url, REDIS_URL: redis.url, ...env });
    const tenant = await createTenant(app.httpUrl, ADMIN_TOKEN);
    const ca = await selfSigned(dir, "ca", "Quiet CA", { ca: true });
    const added = await request(`${app.httpUrl}/api/v1/admin/tenants/${tenant.tenantId}/cas`, {
      auth: bearer(ADMIN_TOKEN),
      body: { pem: ca.pem, register_agents: true },
    });
    const client = track(
      await connect(`mqtts://127.0.0.1:${app.mqttPorts?.tls}`, asDevice(await issue(dir, ca, "d", "quiet-1"))),
    );
    const cut = disconnectCode(client);
    // Removed with no announcement heard, as when it was made while nobody's subscription was up.
    const sql = new pg.Client({ connectionString: db.url });
    await sql.connect();
    await sql.query("UPDATE tenant_cas SET removed_at = now() WHERE fingerprint = $1", [added.body.fingerprint]);
    await sql.end();
    await sleep(300);
    expect(client.connected).toBe(true);
    const admin = new Redis(redis.url);
    await admin.call("CLIENT", "KILL", "TYPE", "pubsub");
    admin.disconnect();
    expect(await cut).toBe(REFUSALS.revoked.mqtt5);
  });
});
