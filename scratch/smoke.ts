import mqtt from "mqtt";
import { startTestApp } from "../test/helpers/app.ts";
import { createTenant, request } from "../test/helpers/http.ts";

const t = await startTestApp((process.argv[2] ?? "embedded") as any, { LOG_LEVEL: "info" });
const a = await createTenant(t.url, t.adminToken, "dev-1");
const port = t.app.mqttPorts!.tcp!;
const c = await mqtt.connectAsync(`mqtt://127.0.0.1:${port}`, {
  username: a.agent.username,
  password: a.agent.password,
  reconnectPeriod: 0,
});
await c.subscribeAsync(`ingest/${a.tenantId}/dev-1/errors`);
c.on("message", (topic, msg) => console.log("FEEDBACK", topic, msg.toString()));
const t0 = Date.now();
await c.publishAsync(`metrics/${a.tenantId}/dev-1/temp`, JSON.stringify({ value: 21.5 }), { qos: 1 });
console.log("puback after", Date.now() - t0, "ms");
await c.publishAsync(`metrics/${a.tenantId}/dev-1/temp`, "nope", { qos: 1 });
await c.publishAsync(`metrics/${a.tenantId}/other/temp`, "1", { qos: 1 });
await new Promise((r) => setTimeout(r, 500));
const rows = await request(`${t.url}/api/v1/metrics`, { auth: `Bearer ${a.viewerToken}` });
console.log(rows.body.items);
await c.endAsync();
await t.cleanup();
