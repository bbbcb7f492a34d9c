import { execFile } from "node:child_process";
import { copyFile } from "node:fs/promises";
import tls from "node:tls";
import { promisify } from "node:util";
import type { IClientOptions } from "mqtt";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { fingerprintOf } from "../../src/credentials/certificates.ts";
import { REFUSALS } from "../../src/ingest/refusals.ts";
import { startTestApp, type TestApp } from "../helpers/app.ts";
import { hasOpenssl, type Issued, issue, selfSigned } from "../helpers/certificates.ts";
import { bearer, createTenant, metricValue, request, storedRows, type TenantFixture } from "../helpers/http.ts";
import { connackOf, connect, disconnectCode, hasMosquittoClients, pubackCode } from "../helpers/mqtt.ts";
import { tempDir } from "../helpers/services.ts";

const run = promisify(execFile);
const openssl = await hasOpenssl();
const mosquittoClients = await hasMosquittoClients();
const NOT_AUTHORIZED = REFUSALS.bad_certificate.mqtt5;

describe.skipIf(!openssl)("device identity by X.509 certificate (MQTT_TLS_CLIENT_AUTH=optional)", () => {
  let t: TestApp;
  let dir: string;
  let removeDir: () => Promise<void>;
  let server: Issued;
  let a: TenantFixture;
  let b: TenantFixture;
  let caA: Issued;
  let caB: Issued;
  let tlsUrl: string;

  const admin = (method: string, route: string, body?: unknown) =>
    request(`${t.url}/api/v1/admin${route}`, { method, auth: bearer(t.adminToken), body });
  /** An MQTT 5 client presenting `device`'s certificate, and no username or password. */
  const asDevice = (device: Issued, extra: IClientOptions = {}): IClientOptions => ({
    protocolVersion: 5,
    key: device.key,
    cert: device.pem,
    ca: server.pem,
    rejectUnauthorized: false,
    ...extra,
  });

  beforeAll(async () => {
    ({ dir, remove: removeDir } = await tempDir());
    server = await selfSigned(dir, "server", "localhost");
    t = await startTestApp("embedded", {
      MQTT_TLS_CERT_FILE: server.certFile,
      MQTT_TLS_KEY_FILE: server.keyFile,
      MQTT_TLS_PORT: "0",
      MQTT_WSS_PORT: "0",
      MQTT_TLS_CLIENT_AUTH: "optional",
    });
    tlsUrl = `mqtts://127.0.0.1:${t.app.mqttPorts?.tls}`;
    a = await createTenant(t.url, t.adminToken, "pump-1");
    b = await createTenant(t.url, t.adminToken, "pump-1");
    caA = await selfSigned(dir, "ca-a", "Tenant A devices", { ca: true });
    caB = await selfSigned(dir, "ca-b", "Tenant B devices", { ca: true });
    expect((await admin("POST", `/tenants/${a.tenantId}/cas`, { pem: caA.pem, register_agents: true })).status).toBe(
      201,
    );
    expect((await admin("POST", `/tenants/${b.tenantId}/cas`, { pem: caB.pem })).status).toBe(201);
  });
  afterAll(async () => {
    await t?.cleanup();
    await removeDir?.();
  });

  it("a pinned certificate connects as its agent without a password; its readings are stored", async () => {
    const device = await selfSigned(dir, "pinned", "anything-at-all");
    const created = await admin("POST", `/tenants/${a.tenantId}/agents`, {
      agent_id: "pinned-1",
      certificate: device.pem,
    });
    expect(created.status).toBe(201);
    expect(created.body).toEqual({
      tenant_id: a.tenantId,
      agent_id: "pinned-1",
      username: `ct_${fingerprintOf(new (await import("node:crypto")).X509Certificate(device.pem))}`,
    });
    const client = await connect(tlsUrl, asDevice(device));
    await client.publishAsync(`metrics/${a.tenantId}/pinned-1/rpm`, "912.5", { qos: 1 });
    await client.endAsync();
    expect((await storedRows(t.url, a.viewerToken, "rpm", 1))[0]).toMatchObject({ agent_id: "pinned-1", value: 912.5 });
    // The certificate's credential has no password: its username with any secret is refused.
    expect(
      await connackOf(tlsUrl, {
        protocolVersion: 5,
        username: created.body.username,
        password: "x",
        rejectUnauthorized: false,
      }),
    ).toBe(REFUSALS.bad_credentials.mqtt5);
  });

  it("a tenant CA's certificate connects as the agent its CN names, registered once at its first connection", async () => {
    const device = await issue(dir, caA, "dev-7", "dev-7");
    for (let i = 0; i < 2; i++) {
      const client = await connect(tlsUrl, asDevice(device));
      await client.publishAsync(`metrics/${a.tenantId}/dev-7/temp`, String(20 + i), { qos: 1 });
      await client.endAsync();
    }
    expect(await storedRows(t.url, a.viewerToken, "temp", 2)).toHaveLength(2);
    const agents = await request(`${t.url}/api/v1/agents?agent_id=dev-7`, { auth: bearer(a.viewerToken) });
    expect(agents.body.items).toEqual([expect.objectContaining({ agent_id: "dev-7", registered: true })]);
  });

  it("refuses, counted and with MQTT 5's reason code: a self-signed, an expired, a not-yet-valid and an unregistered certificate", async () => {
    const before = await metricValue(t.url, "edge_ingest_mqtt_connects_refused_total", { reason: "bad_certificate" });
    const stranger = await selfSigned(dir, "stranger", "pump-1");
    const expired = await issue(dir, caA, "expired", "dev-8", { notAfter: Date.now() - 60_000 });
    const early = await issue(dir, caA, "early", "dev-9", { notBefore: Date.now() + 3_600_000 });
    // Tenant B's CA registers nobody: a CN that is not one of B's agents is refused.
    const unregistered = await issue(dir, caB, "unregistered", "nobody-here");
    // A CA's own certificate (here one whose CN could be an agent id) identifies no device.
    const caAsDevice = await selfSigned(dir, "ca-as-device", "dev-10", { ca: true });
    await admin("POST", `/tenants/${a.tenantId}/cas`, { pem: caAsDevice.pem, register_agents: true });
    for (const device of [stranger, expired, early, unregistered, caAsDevice]) {
      expect(await connackOf(tlsUrl, asDevice(device))).toBe(NOT_AUTHORIZED);
      // MQTT 3.1.1 has no reason codes: "not authorized" is its return code 5.
      expect(await connackOf(tlsUrl, asDevice(device, { protocolVersion: 4 }))).toBe(5);
    }
    const after = await metricValue(t.url, "edge_ingest_mqtt_connects_refused_total", { reason: "bad_certificate" });
    expect(after - before).toBe(10);
    const agents = await request(`${t.url}/api/v1/agents?agent_id=dev-8`, { auth: bearer(a.viewerToken) });
    expect(agents.body.items).toEqual([]);
  });

  it("never crosses tenants: B's CA naming A's agent connects as B's agent, and A's topics stay A's", async () => {
    // pump-1 is an agent of both tenants; B's CA issued this one, so it is B's pump-1.
    const device = await issue(dir, caB, "b-pump", "pump-1");
    const client = await connect(tlsUrl, asDevice(device));
    try {
      expect(await pubackCode(client, `metrics/${a.tenantId}/pump-1/cross`, "1", { qos: 1 })).toBe(
        REFUSALS.forbidden.mqtt5,
      );
      expect(await pubackCode(client, `metrics/${b.tenantId}/pump-1/cross`, "2", { qos: 1 })).toBe(0);
    } finally {
      await client.endAsync();
    }
    expect((await storedRows(t.url, b.viewerToken, "cross", 1))[0].value).toBe(2);
    const seenByA = await request(`${t.url}/api/v1/metrics?name=cross`, { auth: bearer(a.viewerToken) });
    expect(seenByA.body.items).toEqual([]);
  });

  it("revoking a pinned certificate ends its live connection on the spot, and it cannot connect again", async () => {
    const device = await selfSigned(dir, "to-revoke", "x");
    const { body } = await admin("POST", `/tenants/${a.tenantId}/agents`, {
      agent_id: "revoked-1",
      certificate: device.pem,
    });
    const client = await connect(tlsUrl, asDevice(device));
    const cut = disconnectCode(client);
    expect((await admin("DELETE", `/credentials/${body.username}`)).status).toBe(204);
    expect(await cut).toBe(REFUSALS.revoked.mqtt5);
    expect(await connackOf(tlsUrl, asDevice(device))).toBe(NOT_AUTHORIZED);
  });

  it("removing a tenant CA ends its devices' connections; a connection is cut when its certificate expires", async () => {
    const caC = await selfSigned(dir, "ca-c", "Tenant A second CA", { ca: true });
    const added = await admin("POST", `/tenants/${a.tenantId}/cas`, { pem: caC.pem, register_agents: true });
    const viaC = await connect(tlsUrl, asDevice(await issue(dir, caC, "via-c", "via-c")));
    const cutByRemoval = disconnectCode(viaC);
    expect((await admin("DELETE", `/tenants/${a.tenantId}/cas/${added.body.fingerprint}`)).status).toBe(204);
    expect(await cutByRemoval).toBe(REFUSALS.revoked.mqtt5);

    const shortLived = await issue(dir, caA, "short", "short-lived", { notAfter: Date.now() + 4_000 });
    const client = await connect(tlsUrl, asDevice(shortLived));
    expect(await disconnectCode(client, 10_000)).toBe(REFUSALS.certificate_expired.mqtt5);
  });

  it("takes a certificate over secure WebSockets too, and no TLS older than 1.2", async () => {
    const device = await issue(dir, caA, "over-wss", "wss-1");
    const client = await connect(`wss://127.0.0.1:${t.app.mqttPorts?.wss}/mqtt`, asDevice(device));
    await client.publishAsync(`metrics/${a.tenantId}/wss-1/pressure`, "3", { qos: 1 });
    await client.endAsync();
    expect((await storedRows(t.url, a.viewerToken, "pressure", 1))[0]).toMatchObject({ agent_id: "wss-1" });
    const old = new Promise<string>((resolve) => {
      const socket = tls.connect(
        {
          host: "127.0.0.1",
          port: t.app.mqttPorts?.tls,
          maxVersion: "TLSv1.1",
          minVersion: "TLSv1",
          rejectUnauthorized: false,
        },
        () => resolve(`connected with ${socket.getProtocol()}`),
      );
      socket.once("error", (error) => resolve(error.message));
    });
    expect(await old).not.toMatch(/^connected/);
  });

  it("without a certificate (optional), a device gives its username and password as before", async () => {
    const client = await connect(tlsUrl, {
      username: a.agent.username,
      password: a.agent.password,
      rejectUnauthorized: false,
    });
    await client.endAsync();
  });

  it.skipIf(!mosquittoClients)("takes a publish from mosquitto_pub --cert --key", async () => {
    const device = await issue(dir, caA, "mosquitto", "mosq-1");
    await run("mosquitto_pub", [
      ...["-h", "127.0.0.1", "-p", String(t.app.mqttPorts?.tls), "--cafile", server.certFile, "--insecure"],
      ...["--cert", device.certFile, "--key", device.keyFile, "-q", "1", "-V", "mqttv5"],
      ...["-t", `metrics/${a.tenantId}/mosq-1/level`, "-m", "7"],
    ]);
    expect((await storedRows(t.url, a.viewerToken, "level", 1))[0]).toMatchObject({ agent_id: "mosq-1", value: 7 });
  });

  it("reads a renewed server certificate again when asked (SIGHUP), for new handshakes", async () => {
    const fingerprintSeen = () =>
      new Promise<string>((resolve, reject) => {
        const socket = tls.connect({ host: "127.0.0.1", port: t.app.mqttPorts?.tls, rejectUnauthorized: false }, () => {
          resolve(socket.getPeerX509Certificate()?.fingerprint256 ?? "");
          socket.end();
        });
        socket.once("error", reject);
      });
    const before = await fingerprintSeen();
    const renewed = await selfSigned(dir, "renewed", "localhost");
    await copyFile(renewed.certFile, server.certFile);
    await copyFile(renewed.keyFile, server.keyFile);
    await t.app.reloadCertificates();
    const after = await fingerprintSeen();
    expect(after).not.toBe(before);
    server = renewed;
  });
});

describe.skipIf(!openssl)("MQTT_TLS_CLIENT_AUTH=required", () => {
  let t: TestApp;
  let removeDir: () => Promise<void>;

  afterAll(async () => {
    await t?.cleanup();
    await removeDir?.();
  });

  it("refuses a TLS client without a certificate (certificate_required); the plain listener takes passwords", async () => {
    const made = await tempDir();
    removeDir = made.remove;
    const server = await selfSigned(made.dir, "server", "localhost");
    t = await startTestApp("embedded", {
      MQTT_TLS_CERT_FILE: server.certFile,
      MQTT_TLS_KEY_FILE: server.keyFile,
      MQTT_TLS_PORT: "0",
      MQTT_WSS_PORT: "0",
      MQTT_TLS_CLIENT_AUTH: "required",
    });
    const tenant = await createTenant(t.url, t.adminToken, "dev");
    const login = { protocolVersion: 5 as const, username: tenant.agent.username, password: tenant.agent.password };
    const tls = `mqtts://127.0.0.1:${t.app.mqttPorts?.tls}`;
    expect(await connackOf(tls, { ...login, rejectUnauthorized: false })).toBe(REFUSALS.certificate_required.mqtt5);
    expect(await connackOf(tls, { ...login, protocolVersion: 4, rejectUnauthorized: false })).toBe(5);
    expect(
      await metricValue(t.url, "edge_ingest_mqtt_connects_refused_total", { reason: "certificate_required" }),
    ).toBe(2);
    expect(await connackOf(`mqtt://127.0.0.1:${t.app.mqttPorts?.tcp}`, login)).toBe("connected");
  });
});
