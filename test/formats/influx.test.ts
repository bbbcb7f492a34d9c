import { execFile } from "node:child_process";
import { promisify } from "node:util";
import { gzipSync } from "node:zlib";
import { InfluxDB, Point } from "@influxdata/influxdb-client";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type Mode, startTestApp, type TestApp } from "../helpers/app.ts";
import { bearer, createTenant, metricValue, request, storedRows, type TenantFixture } from "../helpers/http.ts";
import { connect, connectAgent, hasMosquittoClients, inbox, pubackCode } from "../helpers/mqtt.ts";
import { distributedUnavailable } from "../helpers/services.ts";

const skipDistributed = await distributedUnavailable();
const mosquittoClients = await hasMosquittoClients();
const modes: { mode: Mode; skip: boolean }[] = [
  { mode: "embedded", skip: false },
  { mode: "distributed", skip: Boolean(skipDistributed) },
];

for (const { mode, skip } of modes) {
  describe.skipIf(skip)(`InfluxDB line protocol (${mode})`, () => {
    let t: TestApp;
    let a: TenantFixture;
    let b: TenantFixture;
    /** The agent's credential as a token: `username.secret`. */
    let agentToken: string;

    beforeAll(async () => {
      t = await startTestApp(mode, { HTTP_BODY_LIMIT_BYTES: String(256 * 1024), MQTT_PORT: "0" });
      a = await createTenant(t.url, t.adminToken, "host-a");
      b = await createTenant(t.url, t.adminToken, "host-b");
      agentToken = `${a.agent.username}.${a.agent.password}`;
    });
    afterAll(() => t?.cleanup());

    const rowsOf = (tenant: TenantFixture, name: string, count: number) =>
      storedRows(t.url, tenant.viewerToken, name, count);
    const write = (path: string, token: string, body: Buffer | string, headers: Record<string, string> = {}) =>
      fetch(`${t.url}${path}`, {
        method: "POST",
        headers: { authorization: `Token ${token}`, "content-type": "text/plain; charset=utf-8", ...headers },
        body,
      });

    it("stores what @influxdata/influxdb-client writes, unchanged, with an agent's credential as its token", async () => {
      const at = new Date(Date.now() - 60_000);
      const writeApi = new InfluxDB({ url: t.url, token: agentToken }).getWriteApi("any-org", "any-bucket", "ms");
      writeApi.useDefaultTags({ host: "rack-7" });
      writeApi.writePoint(
        new Point("cpu").tag("core", "0").floatField("usage", 12.5).intField("idle", 80).timestamp(at),
      );
      writeApi.writePoint(new Point("door").booleanField("open", true).stringField("note", "ajar").timestamp(at));
      // The string field is refused: the client hears InfluxDB's partial write (a 400 it does not retry).
      await expect(writeApi.close()).rejects.toThrow(/^partial write: 1 refused, 3 readings stored; line 2: bad_value/);

      const [usage] = await rowsOf(a, "cpu_usage", 1);
      expect(usage).toMatchObject({
        agent_id: "host-a",
        value: 12.5,
        ts: at.toISOString(),
        tags: { core: "0", host: "rack-7" },
      });
      expect((await rowsOf(a, "cpu_idle", 1))[0].value).toBe(80);
      expect((await rowsOf(a, "door_open", 1))[0].value).toBe(1);
      // The string field was refused by name and counted; the other fields of its line were stored.
      expect(await metricValue(t.url, "edge_ingest_metrics_rejected_total", { reason: "bad_value" })).toBeGreaterThan(
        0,
      );
    });

    it("with an ingest token, the host tag names the agent (agent_id before it); the same batch resent is stored once", async () => {
      const ns = BigInt(Date.now() - 30_000) * 1_000_000n;
      const body = [`temp,host=edge-1,room=lab value=21.5 ${ns}`, `temp,agent_id=edge-2,host=gw value=19 ${ns}`].join(
        "\n",
      );
      for (let i = 0; i < 2; i++) {
        const answer = await write("/api/v2/write?org=o&bucket=b", a.ingestToken, gzipSync(body), {
          "content-encoding": "gzip",
        });
        expect(answer.status).toBe(204);
      }
      await rowsOf(a, "temp", 2);
      // Nothing more comes: the resent points had the same ids (the worker may still be storing a copy).
      await new Promise((resolve) => setTimeout(resolve, 1000));
      const rows = (await request(`${t.url}/api/v1/metrics?name=temp`, { auth: bearer(a.viewerToken) })).body.items;
      expect(rows.map((r: { agent_id: string; tags: unknown }) => [r.agent_id, r.tags]).sort()).toEqual([
        ["edge-1", { room: "lab" }],
        ["edge-2", { host: "gw" }],
      ]);
    });

    it("a bad line mid-batch costs only itself: 400 in InfluxDB's shape with its line number, the rest stored", async () => {
      const body = ["batch_ok value=1", "batch_bad value=", 'batch_quote value="open', "batch_ok value=2"].join("\n");
      const answer = await write("/api/v2/write?precision=s", agentToken, body);
      expect(answer.status).toBe(400);
      const error = (await answer.json()) as { message: string };
      expect(error).toMatchObject({ code: "invalid", line: 2, reason: "bad_line", accepted: 2, rejected_count: 2 });
      expect(error.message).toMatch(/^partial write: 2 refused, 2 readings stored; line 2: bad_line/);
      expect(await rowsOf(a, "batch_ok", 2)).toHaveLength(2);
    });

    it("the v1 /write takes u and p, and precision n|u|ms|s", async () => {
      const url = `/write?db=x&precision=s&u=${encodeURIComponent(a.agent.username)}&p=${encodeURIComponent(a.agent.password)}`;
      const answer = await fetch(`${t.url}${url}`, {
        method: "POST",
        body: `v1_metric value=7 ${Math.floor(Date.now() / 1000)}`,
      });
      expect(answer.status).toBe(204);
      expect((await rowsOf(a, "v1_metric", 1))[0].value).toBe(7);
      const refused = await fetch(`${t.url}/write?u=nobody&p=wrong`, { method: "POST", body: "m value=1" });
      expect(refused.status).toBe(401);
      expect(await refused.json()).toMatchObject({
        error: expect.stringMatching(/credential/),
        reason: "unauthorized",
      });
    });

    it("over its rate the client is told 429 with Retry-After, and influxdb-client's retry stores the batch once", async () => {
      const limits = `${t.url}/api/v1/admin/tenants/${b.tenantId}/limits`;
      await request(limits, {
        method: "PUT",
        auth: bearer(t.adminToken),
        body: { agent_readings_per_second: 5, agent_readings_burst: 5 },
      });
      try {
        const bToken = `${b.agent.username}.${b.agent.password}`;
        const first = await write(
          "/api/v2/write",
          bToken,
          "limited value=1\nlimited value=2\nlimited value=3\nlimited value=4\nlimited value=5",
        );
        expect(first.status).toBe(204);
        const over = await write("/api/v2/write", bToken, "limited value=6");
        expect(over.status).toBe(429);
        expect(Number(over.headers.get("retry-after"))).toBeGreaterThanOrEqual(1);
        expect(await over.json()).toMatchObject({ code: "too many requests", reason: "rate_limited" });

        // influxdb-client reads Retry-After as milliseconds (1 s becomes 1 ms) and adds up to
        // `retryJitter` ms: docs/formats.md says to give it a jitter of seconds, as here.
        const writeApi = new InfluxDB({ url: t.url, token: bToken }).getWriteApi("o", "b", "ms", {
          maxRetries: 10,
          retryJitter: 2000,
        });
        const at = Date.now() - 5_000;
        for (let i = 0; i < 5; i++) {
          writeApi.writePoint(new Point("retried").floatField("value", i).timestamp(new Date(at + i)));
        }
        // The first attempt is refused 429 (the bucket is empty); the client's own retry, after
        // Retry-After, is what stores the batch.
        await expect(writeApi.flush()).rejects.toThrow(/over the agent readings limit/);
        expect(await rowsOf(b, "retried", 5)).toHaveLength(5);
        await writeApi.close();
      } finally {
        await request(limits, {
          method: "PUT",
          auth: bearer(t.adminToken),
          body: { agent_readings_per_second: null, agent_readings_burst: null },
        });
      }
    });

    it("refuses hostile bodies with their 4xx and stores nothing of them", async () => {
      const counted = (reason: string) => metricValue(t.url, "edge_ingest_metrics_rejected_total", { reason });
      const tooMany = await counted("too_many");
      const huge = `m value=1,${"f=1,".repeat(100_000)}g=1`;
      expect((await write("/api/v2/write", agentToken, huge)).status).toBe(413);
      const bomb = gzipSync(Buffer.alloc(50 * 1024 * 1024));
      const bombed = await write("/api/v2/write", agentToken, bomb, { "content-encoding": "gzip" });
      expect(bombed.status).toBe(413);
      expect(await bombed.json()).toMatchObject({ code: "request too large", reason: "too_large" });
      const notGzip = await write("/api/v2/write", agentToken, "plain", { "content-encoding": "gzip" });
      expect(notGzip.status).toBe(400);
      const nul = await write("/api/v2/write", agentToken, "nul_metric value=1\u0000");
      expect(await nul.json()).toMatchObject({ code: "invalid", reason: "bad_line", line: 1 });
      const wide = await write(
        "/api/v2/write",
        agentToken,
        `wide ${Array.from({ length: 201 }, (_, i) => `f${i}=1`).join(",")}`,
      );
      expect(await wide.json()).toMatchObject({
        reason: "bad_line",
        message: expect.stringMatching(/more than 200 fields/),
      });
      const many = await write("/api/v2/write", agentToken, Array.from({ length: 1001 }, () => "m value=1").join("\n"));
      expect(many.status).toBe(413);
      expect((await write("/api/v2/write", agentToken, "m value=1", { "content-encoding": "br" })).status).toBe(415);
      expect((await counted("too_many")) - tooMany).toBe(1);
      await new Promise((resolve) => setTimeout(resolve, 300));
      for (const name of ["m", "m_f", "nul_metric", "wide_f0"]) {
        const stored = await request(`${t.url}/api/v1/metrics?name=${name}`, { auth: bearer(a.viewerToken) });
        expect(stored.body.items, name).toEqual([]);
      }
      const health = await request(`${t.url}/healthz`);
      expect(health.status).toBe(200);
    });

    it("keeps every tenant in its lane: nothing in a body or query reaches another tenant", async () => {
      // An ingest token of A naming B's agent and B's tenant writes into A, as an agent of A's.
      const answer = await write(
        `/api/v2/write?org=${b.tenantId}&orgID=${b.tenantId}`,
        a.ingestToken,
        "lane,agent_id=host-b value=1",
      );
      expect(answer.status).toBe(204);
      expect((await rowsOf(a, "lane", 1))[0].agent_id).toBe("host-b");
      // An agent's credential may not write as another agent at all.
      const other = await write("/api/v2/write", agentToken, "lane,agent_id=host-b value=2");
      expect(await other.json()).toMatchObject({ reason: "bad_agent_id", line: 1 });
      // A viewer's token may not write.
      expect((await write("/api/v2/write", b.viewerToken, "lane value=3")).status).toBe(403);
      await new Promise((resolve) => setTimeout(resolve, 300));
      const seenByB = await request(`${t.url}/api/v1/metrics?name=lane`, { auth: bearer(b.viewerToken) });
      expect(seenByB.body.items).toEqual([]);
    });

    it("over MQTT, an agent publishes line protocol to metrics/{tenant}/{agent}/$influx (mqtt.js, mosquitto_pub); a bad line is fed back by number", async () => {
      const url = `mqtt://127.0.0.1:${t.app.mqttPorts?.tcp}`;
      const client = await connectAgent(url, a.agent);
      const v5 = await connect(url, { protocolVersion: 5, username: a.agent.username, password: a.agent.password });
      try {
        const feedbackTopic = `ingest/${a.tenantId}/host-a/errors`;
        const feedback = inbox(client);
        await client.subscribeAsync(feedbackTopic, { qos: 1 });
        const ns = BigInt(Date.now() - 10_000) * 1_000_000n;
        // Telegraf's topic layouts add levels after it (host, plugin): they are ignored.
        const topic = `metrics/${a.tenantId}/host-a/$influx/rack-7/mem`;
        await client.publishAsync(topic, `mem,host=rack-7 used=512i,free=1.5e3 ${ns}\nmem used=`, { qos: 1 });
        const rows = await rowsOf(a, "mem_used", 1);
        expect(rows[0]).toMatchObject({ value: 512, tags: { host: "rack-7" } });
        expect((await rowsOf(a, "mem_free", 1))[0].value).toBe(1500);
        const [message] = await feedback.waitFor(1, feedbackTopic);
        expect(JSON.parse(message?.payload ?? "")).toMatchObject({ reason: "bad_line", line: 2, topic });
        if (mosquittoClients) {
          await promisify(execFile)("mosquitto_pub", [
            ...["-h", "127.0.0.1", "-p", String(t.app.mqttPorts?.tcp), "-q", "1"],
            ...["-u", a.agent.username, "-P", a.agent.password],
            ...["-t", `metrics/${a.tenantId}/host-a/$influx`, "-m", "mosq,line=A rpm=912.5"],
          ]);
          expect((await rowsOf(a, "mosq_rpm", 1))[0]).toMatchObject({ value: 912.5, tags: { line: "A" } });
        }
        // Another tenant's line-protocol topic is another tenant's: refused like any of its topics.
        expect(await pubackCode(v5, `metrics/${b.tenantId}/host-b/$influx`, "m value=1", { qos: 1 })).toBe(0x87);
        expect(await pubackCode(v5, `metrics/${a.tenantId}/host-a/$influx`, "m value=", { qos: 1 })).toBe(0x99);
      } finally {
        await client.endAsync();
        await v5.endAsync();
      }
    });
  });
}
