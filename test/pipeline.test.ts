import pg from "pg";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type Mode, startTestApp, type TestApp } from "./helpers/app.ts";
import { basic, bearer, createTenant, eventually, metricValue, request, type TenantFixture } from "./helpers/http.ts";
import { distributedUnavailable } from "./helpers/services.ts";
import { openStream } from "./helpers/sse.ts";

const skipDistributed = await distributedUnavailable();

const modes: { mode: Mode; skip: boolean }[] = [
  { mode: "embedded", skip: false },
  { mode: "distributed", skip: Boolean(skipDistributed) },
];

for (const { mode, skip } of modes) {
  describe.skipIf(skip)(`ingestion pipeline (${mode})`, () => {
    let t: TestApp;
    let a: TenantFixture;
    let b: TenantFixture;

    beforeAll(async () => {
      t = await startTestApp(mode, { MAX_BATCH_ITEMS: "5", HTTP_BODY_LIMIT_BYTES: "4096", SSE_HEARTBEAT_MS: "200" });
      a = await createTenant(t.url, t.adminToken, "sensor-a");
      b = await createTenant(t.url, t.adminToken, "sensor-b");
    });
    afterAll(() => t?.cleanup());

    const post = (auth: string, body: unknown) => request(`${t.url}/api/v1/metrics`, { auth, body });
    const query = (auth: string, params = "") => request(`${t.url}/api/v1/metrics?${params}`, { auth });
    /** Waits until the tenant's query returns `count` items (the distributed worker stores asynchronously). */
    const rowsOf = (auth: string, params: string, count: number) =>
      eventually(async () => {
        const answer = await query(auth, params);
        return answer.body.items.length === count ? answer.body.items : undefined;
      });

    it("stores an agent's metrics posted over HTTP and returns them newest first", async () => {
      const yesterday = new Date(Math.floor(Date.now() / 86_400_000) * 86_400_000 - 86_400_000);
      const answer = await post(a.agent.auth, {
        metrics: [
          {
            name: "temp",
            value: 21.5,
            timestamp: yesterday.toISOString().replace(".000Z", "Z"),
            tags: { room: "lab" },
          },
          { name: "temp", value: 22, timestamp: yesterday.getTime() / 1000 + 60 },
        ],
      });
      expect(answer.status).toBe(202);
      expect(answer.body).toEqual({ accepted: 2, rejected: [] });

      const items = await rowsOf(bearer(a.viewerToken), "name=temp", 2);
      expect(items.map((i: { value: number }) => i.value)).toEqual([22, 21.5]);
      expect(items[1]).toMatchObject({
        agent_id: "sensor-a",
        name: "temp",
        ts: yesterday.toISOString(),
        tags: { room: "lab" },
        dedupe_id: null,
      });
    });

    it("stores a resent dedupe_id once", async () => {
      const metric = { name: "dedupe", value: 1, dedupe_id: "reading-42" };
      const completed = () => metricValue(t.url, "edge_ingest_jobs_completed_total");
      const before = await completed();
      expect((await post(a.agent.auth, { metrics: [metric] })).status).toBe(202);
      expect((await post(a.agent.auth, { metrics: [metric, { ...metric, value: 2 }] })).status).toBe(202);
      // Both submissions processed: a second, wrongly stored copy would be there now.
      await eventually(async () => ((await completed()) >= before + 2 ? true : undefined));
      const { body } = await query(bearer(a.viewerToken), "name=dedupe");
      expect(body.items).toHaveLength(1);
      expect(body.items[0]).toMatchObject({ value: 1, dedupe_id: "reading-42" });
    });

    it("takes the valid items of a mixed batch and names the reason for each refused one", async () => {
      const answer = await post(a.agent.auth, {
        metrics: [
          { name: "mixed", value: 1 },
          { name: "mixed", value: "high" },
          { name: "bad name!", value: 1 },
          { name: "mixed", value: 2, timestamp: "yesterday" },
          { name: "mixed", value: 3, timestamp: Date.now() - 40 * 86_400_000 },
        ],
      });
      expect(answer.status).toBe(202);
      expect(answer.body.accepted).toBe(1);
      expect(answer.body.rejected.map((r: { index: number; reason: string }) => [r.index, r.reason])).toEqual([
        [1, "bad_value"],
        [2, "bad_name"],
        [3, "bad_timestamp"],
        [4, "too_old"],
      ]);
      await rowsOf(bearer(a.viewerToken), "name=mixed", 1);
    });

    it("refuses a wholly invalid request with 400 and the reason, and counts every refusal", async () => {
      const invalid = await post(a.agent.auth, { metrics: [{ name: "x", value: null }] });
      expect(invalid.status).toBe(400);
      expect(invalid.body.error.code).toBe("bad_value");
      expect(invalid.body.rejected).toEqual([{ index: 0, reason: "bad_value", message: expect.any(String) }]);

      const badJson = await request(`${t.url}/api/v1/metrics`, { auth: a.agent.auth, rawBody: "{nope" });
      expect([badJson.status, badJson.body.error.code]).toEqual([400, "bad_json"]);

      const tooMany = await post(a.agent.auth, { metrics: Array.from({ length: 6 }, () => ({ name: "x", value: 1 })) });
      expect([tooMany.status, tooMany.body.error.code]).toEqual([400, "too_many"]);

      const tooLarge = await post(a.agent.auth, {
        metrics: [{ name: "x", value: 1, tags: { pad: "x".repeat(5000) } }],
      });
      expect([tooLarge.status, tooLarge.body.error.code]).toEqual([413, "too_large"]);

      const noMetrics = await post(a.agent.auth, { values: [] });
      expect([noMetrics.status, noMetrics.body.error.code]).toEqual([400, "bad_request"]);

      const metrics = (await request<string>(`${t.url}/metrics`)).body;
      for (const reason of ["bad_value", "bad_json", "too_many", "too_large"]) {
        expect(metrics).toMatch(
          new RegExp(`edge_ingest_metrics_rejected_total\\{source="http",reason="${reason}"\\} [1-9]`),
        );
      }
      expect(metrics).toMatch(/edge_ingest_metrics_accepted_total\{source="http"\} [1-9]/);
    });

    it("takes an ingest token for a named agent, and refuses it without one", async () => {
      const ok = await post(bearer(a.ingestToken), {
        agent_id: "gateway-7",
        metrics: [{ name: "via_token", value: 5 }],
      });
      expect(ok.status).toBe(202);
      const items = await rowsOf(bearer(a.viewerToken), "name=via_token", 1);
      expect(items[0].agent_id).toBe("gateway-7");

      const missing = await post(bearer(a.ingestToken), { metrics: [{ name: "via_token", value: 5 }] });
      expect([missing.status, missing.body.error.code]).toEqual([400, "bad_agent_id"]);
    });

    it("does not let a viewer token write, nor an agent write as another agent", async () => {
      const viewer = await post(bearer(a.viewerToken), { agent_id: "sensor-a", metrics: [{ name: "x", value: 1 }] });
      expect([viewer.status, viewer.body.error.code]).toEqual([403, "forbidden"]);
      const spoof = await post(a.agent.auth, { agent_id: "other", metrics: [{ name: "x", value: 1 }] });
      expect([spoof.status, spoof.body.error.code]).toEqual([403, "forbidden"]);
    });

    it("never shows one tenant's data to another tenant's tokens or agents", async () => {
      await post(a.agent.auth, { metrics: [{ name: "secret_a", value: 7 }] });
      await rowsOf(bearer(a.viewerToken), "name=secret_a", 1);

      for (const auth of [bearer(b.viewerToken), bearer(b.ingestToken)]) {
        expect((await query(auth, "name=secret_a")).body.items).toEqual([]);
        expect((await query(auth, "agent_id=sensor-a")).body.items).toEqual([]);
        expect((await query(auth)).body.items.every((i: { agent_id: string }) => i.agent_id !== "sensor-a")).toBe(true);
      }
      const asOtherAgent = await query(b.agent.auth, "agent_id=sensor-a");
      expect([asOtherAgent.status, asOtherAgent.body.error.code]).toEqual([403, "forbidden"]);
      const ownOnly = await query(a.agent.auth, "name=secret_a");
      expect(ownOnly.body.items).toHaveLength(1);
    });

    it("answers a metric's series in time buckets and the latest values, to the tenant only", async () => {
      const start = Date.now() - 10 * 60_000;
      const at = (minute: number, second: number) => start - (start % 60_000) + minute * 60_000 + second * 1000;
      await post(a.agent.auth, {
        metrics: [
          { name: "temp", value: 20, timestamp: at(0, 10) },
          { name: "temp", value: 22, timestamp: at(0, 40) },
          { name: "temp", value: 30, timestamp: at(2, 5) },
          { name: "humidity", value: 55, timestamp: at(2, 5), tags: { room: "lab" } },
        ],
      });
      const params = `name=temp&agent_id=sensor-a&from=${at(0, 0)}&to=${at(3, 0)}&step=1m&agg=avg,max,count,last`;
      const series = await eventually(async () => {
        const answer = await request(`${t.url}/api/v1/metrics/series?${params}`, { auth: bearer(a.viewerToken) });
        return answer.body.buckets?.length === 2 ? answer.body : undefined;
      });
      expect(series).toEqual({
        name: "temp",
        agent_id: "sensor-a",
        from: new Date(at(0, 0)).toISOString(),
        to: new Date(at(3, 0)).toISOString(),
        step_ms: 60_000,
        buckets: [
          { start: new Date(at(0, 0)).toISOString(), avg: 21, max: 22, count: 2, last: 22 },
          { start: new Date(at(2, 0)).toISOString(), avg: 30, max: 30, count: 1, last: 30 },
        ],
      });
      const latest = await request(`${t.url}/api/v1/metrics/latest?agent_id=sensor-a`, { auth: bearer(a.viewerToken) });
      expect(
        latest.body.items
          .filter((i: { name: string }) => ["temp", "humidity"].includes(i.name))
          .map((i: { name: string; value: number }) => [i.name, i.value]),
      ).toEqual([
        ["humidity", 55],
        ["temp", 30],
      ]);
      // A page at a time, each item whole; the last page has no cursor.
      const first = await request(`${t.url}/api/v1/metrics/latest?agent_id=sensor-a&limit=1`, {
        auth: bearer(a.viewerToken),
      });
      expect(first.headers.get("content-type")).toMatch(/^application\/json/);
      expect(first.body.items).toEqual([latest.body.items[0]]);
      expect(first.body.items[0]).toEqual({
        agent_id: "sensor-a",
        name: latest.body.items[0].name,
        value: expect.any(Number),
        ts: expect.stringMatching(/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/),
        tags: latest.body.items[0].tags,
        received_at: expect.stringMatching(/Z$/),
      });
      const pages = [first.body.items];
      let cursor = first.body.next_cursor;
      while (cursor) {
        const next = await request(
          `${t.url}/api/v1/metrics/latest?agent_id=sensor-a&limit=1&cursor=${encodeURIComponent(cursor)}`,
          { auth: bearer(a.viewerToken) },
        );
        pages.push(next.body.items);
        cursor = next.body.next_cursor;
      }
      expect(pages.flat()).toEqual(latest.body.items);
      expect(latest.body.items.find((i: { name: string }) => i.name === "humidity")).toMatchObject({
        tags: { room: "lab" },
        ts: new Date(at(2, 5)).toISOString(),
      });

      // Another tenant sees none of it, whatever it names.
      const other = bearer(b.viewerToken);
      expect((await request(`${t.url}/api/v1/metrics/series?${params}`, { auth: other })).body.buckets).toEqual([]);
      const theirs = await request(`${t.url}/api/v1/metrics/latest`, { auth: other });
      expect(theirs.body.items.filter((i: { agent_id: string }) => i.agent_id === "sensor-a")).toEqual([]);
      const otherAgent = await request(`${t.url}/api/v1/metrics/latest?agent_id=sensor-a`, { auth: b.agent.auth });
      expect(otherAgent.status).toBe(403);

      // Without a window: the last hour, in buckets of 10 s.
      const before = Date.now();
      const recent = await request(`${t.url}/api/v1/metrics/series?name=temp&agent_id=sensor-a`, {
        auth: bearer(a.viewerToken),
      });
      expect(recent.status).toBe(200);
      expect(recent.body.step_ms).toBe(10_000);
      expect(Date.parse(recent.body.to) - Date.parse(recent.body.from)).toBe(3_600_000);
      expect(Date.parse(recent.body.to)).toBeGreaterThanOrEqual(before);
      expect(Date.parse(recent.body.to)).toBeLessThanOrEqual(Date.now());
      const day = await request(`${t.url}/api/v1/metrics/series?name=temp&from=${Date.now() - 86_400_000}`, {
        auth: bearer(a.viewerToken),
      });
      expect(day.body.step_ms).toBe(300_000);

      // And a series asks sensible things.
      const bad = (query: string) =>
        request(`${t.url}/api/v1/metrics/series?${query}`, { auth: bearer(a.viewerToken) });
      expect((await bad(`name=temp&from=${at(0, 0)}&to=${at(3, 0)}&step=1x`)).status).toBe(400);
      expect((await bad(`name=temp&from=${at(0, 0)}&to=${at(3, 0)}&step=1m&agg=median`)).status).toBe(400);
      expect((await bad(`name=temp&from=0&to=${Date.now()}&step=1s`)).body.error.message).toMatch(/at most/);
      expect((await bad(`from=${at(0, 0)}&to=${at(3, 0)}&step=1m`)).body.error.code).toBe("bad_name");
    });

    it("keeps a tenant's refusals for a console opened later, and shows them to that tenant only", async () => {
      const c = await createTenant(t.url, t.adminToken, "sensor-c", "tenant c");
      const d = await createTenant(t.url, t.adminToken, "sensor-d", "tenant d");
      await post(c.agent.auth, { metrics: [{ name: "x", value: "hot" }] });
      await post(c.agent.auth, { metrics: [{ name: "x", value: 1, timestamp: "2001-01-01T00:00:00Z" }] });
      await post(c.agent.auth, {
        metrics: [
          { name: "x", value: "cold" },
          { name: "y", value: "warm" },
        ],
      });
      await post(d.agent.auth, { metrics: [{ name: "x", value: "d's own" }] });
      const history = (auth: string, params = "") => request(`${t.url}/api/v1/rejections?${params}`, { auth });

      const all = await history(bearer(c.viewerToken));
      expect(all.status).toBe(200);
      expect(all.body.items.map((r: { reason: string; count: number }) => [r.reason, r.count])).toEqual([
        ["bad_value", 2],
        ["too_old", 1],
        ["bad_value", 1],
      ]);
      expect(all.body.items[0]).toMatchObject({
        agent_id: "sensor-c",
        source: "http",
        at: expect.stringMatching(/Z$/),
      });
      expect(all.body.counts).toEqual([
        { reason: "bad_value", count: 3 },
        { reason: "too_old", count: 1 },
      ]);
      const first = await history(bearer(c.viewerToken), "limit=2");
      const second = await history(
        bearer(c.viewerToken),
        `limit=2&cursor=${encodeURIComponent(first.body.next_cursor)}`,
      );
      expect([...first.body.items, ...second.body.items]).toEqual(all.body.items);
      expect(second.body.next_cursor).toBeNull();
      // The agent sees its own; another tenant sees none of them, whatever agent it names.
      expect((await history(c.agent.auth)).body.items).toHaveLength(3);
      expect((await history(bearer(d.viewerToken))).body.items.map((r: { agent_id: string }) => r.agent_id)).toEqual([
        "sensor-d",
      ]);
      expect((await history(bearer(d.viewerToken), "agent_id=sensor-c")).body).toEqual({
        items: [],
        next_cursor: null,
        counts: [],
        window_hours: 24,
      });
      expect((await history(bearer(c.viewerToken), "cursor=nonsense")).status).toBe(400);
    });

    it("streams a tenant's newly stored metrics over SSE, and only that tenant's", async () => {
      const streamA = await openStream(`${t.url}/api/v1/stream?token=${encodeURIComponent(a.viewerToken)}&name=live`);
      const streamB = await openStream(`${t.url}/api/v1/stream`, { authorization: bearer(b.viewerToken) });
      try {
        await post(a.agent.auth, {
          metrics: [
            { name: "live", value: 3.25, tags: { k: "v" } },
            { name: "other", value: 1 },
          ],
        });
        const [event] = await streamA.waitFor(1);
        expect(event).toMatchObject({
          event: "metric",
          data: { agent_id: "sensor-a", name: "live", value: 3.25, tags: { k: "v" } },
        });
        await post(b.agent.auth, { metrics: [{ name: "mine", value: 9 }] });
        const eventsB = await streamB.waitFor(1);
        // B's own metric reached B; A's, posted first, never did.
        expect(eventsB.map((e) => e.data.agent_id)).toEqual(["sensor-b"]);
        expect(streamA.events).toHaveLength(1);
      } finally {
        streamA.close();
        streamB.close();
      }
    });

    it("answers 401 to missing, wrong and revoked credentials", async () => {
      expect((await post("", { metrics: [{ name: "x", value: 1 }] })).status).toBe(401);
      expect((await post(basic(a.agent.username, "wrong"), { metrics: [{ name: "x", value: 1 }] })).status).toBe(401);
      expect((await query(bearer("tk_nothing.secret"))).status).toBe(401);

      const c = await createTenant(t.url, t.adminToken, "to-revoke");
      expect((await post(c.agent.auth, { metrics: [{ name: "x", value: 1 }] })).status).toBe(202);
      const admin = bearer(t.adminToken);
      const revoke = await request(`${t.url}/api/v1/admin/credentials/${c.agent.username}`, {
        method: "DELETE",
        auth: admin,
      });
      expect(revoke.status).toBe(204);
      const tokenUser = c.viewerToken.split(".")[0];
      await request(`${t.url}/api/v1/admin/credentials/${tokenUser}`, { method: "DELETE", auth: admin });

      const after = await post(c.agent.auth, { metrics: [{ name: "x", value: 1 }] });
      expect([after.status, after.body.error.code]).toEqual([401, "unauthorized"]);
      expect((await query(bearer(c.viewerToken))).status).toBe(401);
      expect((await request(`${t.url}/api/v1/stream?token=${c.viewerToken}`)).status).toBe(401);
    });

    it("ends a live stream when its token is revoked", async () => {
      const c = await createTenant(t.url, t.adminToken, "streamer");
      const stream = await openStream(`${t.url}/api/v1/stream?token=${encodeURIComponent(c.viewerToken)}`);
      const username = c.viewerToken.split(".")[0];
      await request(`${t.url}/api/v1/admin/credentials/${username}`, { method: "DELETE", auth: bearer(t.adminToken) });
      await stream.ended;
      // And a new stream with that token is refused.
      const again = await request(`${t.url}/api/v1/stream`, { auth: bearer(c.viewerToken) });
      expect(again.status).toBe(401);
      expect(again.body.error.code).toBe("unauthorized");
    });

    it("pages through results with a cursor", async () => {
      const base = Math.floor(Date.now() / 1000) - 3600;
      const metrics = [1, 2, 3, 4, 5].map((v) => ({ name: "paged", value: v, timestamp: base + v }));
      await post(a.agent.auth, { metrics });
      await rowsOf(bearer(a.viewerToken), "name=paged", 5);
      const seen: number[] = [];
      let cursor: string | null = "";
      while (cursor !== null) {
        const page: { body: { items: { value: number }[]; next_cursor: string | null } } = await query(
          bearer(a.viewerToken),
          `name=paged&limit=2${cursor ? `&cursor=${cursor}` : ""}`,
        );
        seen.push(...page.body.items.map((i) => i.value));
        cursor = page.body.next_cursor;
      }
      expect(seen).toEqual([5, 4, 3, 2, 1]);
      const window = await query(bearer(a.viewerToken), `name=paged&from=${(base + 2) * 1000}&to=${(base + 4) * 1000}`);
      expect(window.body.items.map((i: { value: number }) => i.value)).toEqual([3, 2]);
      expect((await query(bearer(a.viewerToken), "limit=0")).status).toBe(400);
    });

    it("guards the admin API", async () => {
      const body = { name: "x" };
      expect((await request(`${t.url}/api/v1/admin/tenants`, { body })).status).toBe(401);
      const notAdmin = await request(`${t.url}/api/v1/admin/tenants`, { auth: bearer(a.ingestToken), body });
      expect([notAdmin.status, notAdmin.body.error.code]).toEqual([403, "forbidden"]);
      const admin = bearer(t.adminToken);
      const unknown = await request(`${t.url}/api/v1/admin/tenants/00000000-0000-4000-8000-000000000000/agents`, {
        auth: admin,
        body: { agent_id: "x" },
      });
      expect(unknown.status).toBe(404);
      const duplicate = await request(`${t.url}/api/v1/admin/tenants/${a.tenantId}/agents`, {
        auth: admin,
        body: { agent_id: "sensor-a" },
      });
      expect([duplicate.status, duplicate.body.error.code]).toEqual([409, "conflict"]);
      const badRole = await request(`${t.url}/api/v1/admin/tenants/${a.tenantId}/tokens`, {
        auth: admin,
        body: { role: "admin" },
      });
      expect(badRole.status).toBe(400);
      const unknownCredential = await request(`${t.url}/api/v1/admin/credentials/ag_nobody`, {
        method: "DELETE",
        auth: admin,
      });
      expect(unknownCredential.status).toBe(404);
    });

    it("reports health and readiness", async () => {
      expect((await request(`${t.url}/healthz`)).body).toEqual({ status: "ok" });
      expect((await request(`${t.url}/readyz`)).body).toEqual({
        status: "ready",
        checks: { database: "ok", queue: "ok", ...(mode === "distributed" && { redis: "ok" }) },
      });
    });

    it.skipIf(mode !== "distributed")("stores only keyed hashes of secrets", async () => {
      const client = new pg.Client({ connectionString: t.databaseUrl });
      await client.connect();
      try {
        const { rows } = await client.query("SELECT username, secret_hash FROM credentials WHERE username = $1", [
          a.agent.username,
        ]);
        expect(rows).toHaveLength(1);
        expect(rows[0].secret_hash).not.toContain(a.agent.password);
        const dump = JSON.stringify((await client.query("SELECT * FROM credentials")).rows);
        expect(dump).not.toContain(a.agent.password);
        expect(dump).not.toContain(a.viewerToken.split(".")[1]);
      } finally {
        await client.end();
      }
    });
  });
}
