import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startTestApp, type TestApp } from "../helpers/app.ts";
import { hasOpenssl, selfSigned } from "../helpers/certificates.ts";
import { bearer, createTenant, eventually, request } from "../helpers/http.ts";
import { connect } from "../helpers/mqtt.ts";
import { tempDir } from "../helpers/services.ts";

const openssl = await hasOpenssl();

describe.skipIf(!openssl)("MQTT over TLS and secure WebSockets", () => {
  let t: TestApp;
  let removeDir: () => Promise<void>;

  beforeAll(async () => {
    const dir = await tempDir();
    removeDir = dir.remove;
    const server = await selfSigned(dir.dir, "server", "localhost");
    t = await startTestApp("embedded", {
      MQTT_TLS_CERT_FILE: server.certFile,
      MQTT_TLS_KEY_FILE: server.keyFile,
      MQTT_TLS_PORT: "0",
      MQTT_WSS_PORT: "0",
    });
  });
  afterAll(async () => {
    await t?.cleanup();
    await removeDir?.();
  });

  it("takes publishes on both secure listeners", async () => {
    const tenant = await createTenant(t.url, t.adminToken, "secure");
    const login = { username: tenant.agent.username, password: tenant.agent.password, rejectUnauthorized: false };
    const topic = `metrics/${tenant.tenantId}/secure/over_tls`;
    for (const url of [`mqtts://127.0.0.1:${t.app.mqttPorts?.tls}`, `wss://127.0.0.1:${t.app.mqttPorts?.wss}/mqtt`]) {
      const client = await connect(url, login);
      await client.publishAsync(topic, "1", { qos: 1 });
      await client.endAsync();
    }
    const items = await eventually(async () => {
      const { body } = await request(`${t.url}/api/v1/metrics?name=over_tls`, { auth: bearer(tenant.viewerToken) });
      return body.items.length === 2 ? body.items : undefined;
    });
    expect(items).toHaveLength(2);
  });
});
