import { once } from "node:events";
import net from "node:net";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type Mode, startTestApp, type TestApp } from "./helpers/app.ts";
import { basic, bearer, createTenant, request, type TenantFixture } from "./helpers/http.ts";
import { connackOf } from "./helpers/mqtt.ts";
import { distributedUnavailable } from "./helpers/services.ts";

const skipDistributed = Boolean(await distributedUnavailable());
const NUL = "\u0000";

/** Writes an HTTP request as given (fetch refuses a NUL in a header) and returns the status code. */
async function rawStatus(baseUrl: string, head: string): Promise<number> {
  const { port } = new URL(baseUrl);
  const socket = net.connect(Number(port), "127.0.0.1");
  socket.write(head);
  const [chunk] = (await once(socket, "data")) as [Buffer];
  socket.destroy();
  return Number(/^HTTP\/1\.1 (\d+)/.exec(chunk.toString("latin1"))?.[1]);
}

for (const { mode, skip } of [
  { mode: "embedded" as Mode, skip: false },
  { mode: "distributed" as Mode, skip: skipDistributed },
]) {
  describe.skipIf(skip)(`client bytes never reach the database (${mode})`, () => {
    let t: TestApp;
    let tenant: TenantFixture;
    const logs: string[] = [];
    beforeAll(async () => {
      t = await startTestApp(mode, {}, logs);
      tenant = await createTenant(t.url, t.adminToken, "dev");
    });
    afterAll(() => t?.cleanup());

    it("answers a NUL byte in each HTTP field with its own 4xx, keeping the valid readings beside it", async () => {
      const url = `${t.url}/api/v1/metrics`;
      expect((await request(url, { auth: basic(`ag_${NUL}bcdefghijkl`, "x") })).status).toBe(401);
      // A raw NUL in a header is refused by Node's HTTP parser before any handler runs.
      expect(
        await rawStatus(t.url, `GET /api/v1/metrics HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer tk_${NUL}x.y\r\n\r\n`),
      ).toBe(400);
      const viewer = bearer(tenant.viewerToken);
      // In the middle: the URL parser drops control characters at either end of a URL.
      expect((await request(`${url}?agent_id=a${NUL}b`, { auth: viewer })).body.error.code).toBe("bad_agent_id");
      expect((await request(`${url}?name=n${NUL}m`, { auth: viewer })).body.error.code).toBe("bad_name");
      expect((await request(`${t.url}/api/v1/stream?name=n${NUL}m`, { auth: viewer })).status).toBe(400);
      const ingest = bearer(tenant.ingestToken);
      const withAgent = await request(url, {
        auth: ingest,
        body: { agent_id: `a${NUL}`, metrics: [{ name: "x", value: 1 }] },
      });
      expect(withAgent.body.error.code).toBe("bad_agent_id");
      const mixed = await request(url, {
        auth: tenant.agent.auth,
        body: {
          metrics: [
            { name: `n${NUL}`, value: 1 },
            { name: "x", value: 2, dedupe_id: `d${NUL}` },
            { name: "x", value: 3, tags: { k: `v${NUL}` } },
            { name: "x", value: 4, dedupe_id: "\udc00" },
            { name: "x", value: 5 },
          ],
        },
      });
      expect(mixed.status).toBe(202);
      expect(mixed.body.accepted).toBe(1);
      expect(mixed.body.rejected.map((r: { reason: string }) => r.reason)).toEqual([
        "bad_name",
        "bad_dedupe_id",
        "bad_tags",
        "bad_dedupe_id",
      ]);
      const admin = bearer(t.adminToken);
      expect((await request(`${t.url}/api/v1/admin/tenants`, { auth: admin, body: { name: `t${NUL}` } })).status).toBe(
        400,
      );
      expect(
        (await request(`${t.url}/api/v1/admin/credentials/ag_${NUL}x`, { method: "DELETE", auth: admin })).status,
      ).toBe(404);
    });

    it("refuses a hundred CONNECTs with a NUL in the username as bad credentials, with no stack trace and no flood of logs", async () => {
      const before = logs.length;
      const tcp = `mqtt://127.0.0.1:${t.app.mqttPorts?.tcp}`;
      for (let i = 0; i < 100; i++) {
        expect(await connackOf(tcp, { username: `ag_${NUL}${i}`, password: "x" })).toBe(4);
      }
      expect(logs.length - before).toBeLessThan(5);
      expect(logs.filter((line) => line.includes('"stack"'))).toEqual([]);
    });
  });
}
