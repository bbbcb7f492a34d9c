import { gzipSync } from "node:zlib";
import { OTLPMetricExporter as JsonExporter } from "@opentelemetry/exporter-metrics-otlp-http";
import { OTLPMetricExporter as ProtoExporter } from "@opentelemetry/exporter-metrics-otlp-proto";
import { resourceFromAttributes } from "@opentelemetry/resources";
import { MeterProvider, PeriodicExportingMetricReader, type PushMetricExporter } from "@opentelemetry/sdk-metrics";
import protobuf from "protobufjs";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type Mode, startTestApp, type TestApp } from "../helpers/app.ts";
import { bearer, createTenant, request, storedRows, type TenantFixture } from "../helpers/http.ts";
import { distributedUnavailable } from "../helpers/services.ts";

const skipDistributed = await distributedUnavailable();
const modes: { mode: Mode; skip: boolean }[] = [
  { mode: "embedded", skip: false },
  { mode: "distributed", skip: Boolean(skipDistributed) },
];

/** google.rpc.Status, as a protobuf error body is read by an OTLP exporter. */
const Status = protobuf
  .parse("syntax = 'proto3'; message Status { int32 code = 1; string message = 2; }")
  .root.lookupType("Status");

for (const { mode, skip } of modes) {
  describe.skipIf(skip)(`OpenTelemetry metrics, OTLP/HTTP (${mode})`, () => {
    let t: TestApp;
    let a: TenantFixture;
    let b: TenantFixture;

    beforeAll(async () => {
      t = await startTestApp(mode, { HTTP_BODY_LIMIT_BYTES: String(256 * 1024) });
      a = await createTenant(t.url, t.adminToken, "svc-a");
      b = await createTenant(t.url, t.adminToken, "svc-b");
    });
    afterAll(() => t?.cleanup());

    const rowsOf = (tenant: TenantFixture, name: string, count: number) =>
      storedRows(t.url, tenant.viewerToken, name, count);
    const post = (token: string, type: string, body: Buffer | string, headers: Record<string, string> = {}) =>
      fetch(`${t.url}/v1/metrics`, {
        method: "POST",
        headers: { authorization: `Bearer ${token}`, "content-type": type, ...headers },
        body,
      });

    /** Records a counter, a histogram and a gauge through the SDK, unchanged, and exports them once. */
    async function exportThrough(exporter: PushMetricExporter, attributes: Record<string, string>, prefix: string) {
      const reader = new PeriodicExportingMetricReader({ exporter, exportIntervalMillis: 3_600_000 });
      const provider = new MeterProvider({ resource: resourceFromAttributes(attributes), readers: [reader] });
      const meter = provider.getMeter("edge-ingest-test");
      meter.createCounter(`${prefix}.requests`).add(3, { route: "/checkout" });
      const latency = meter.createHistogram(`${prefix}.latency`);
      latency.record(12);
      latency.record(30);
      meter.createGauge(`${prefix}.temperature`).record(21.5, { room: "lab" });
      // Shutting down exports what was recorded, once (a flush before it would export the cumulative counter twice).
      await provider.shutdown();
    }

    for (const [encoding, Exporter] of [
      ["protobuf", ProtoExporter],
      ["json", JsonExporter],
    ] as const) {
      it(`stores what the SDK's ${encoding} exporter sends, gzip, with an agent's credential`, async () => {
        const prefix = `sdk_${encoding}`;
        const exporter = new Exporter({
          url: `${t.url}/v1/metrics`,
          headers: { authorization: `Bearer ${a.agent.username}.${a.agent.password}` },
          compression: "gzip" as never,
        });
        await exportThrough(exporter, { "service.name": "checkout", "host.name": "web-1" }, prefix);
        const [requests] = await rowsOf(a, `${prefix}.requests`, 1);
        expect(requests).toMatchObject({
          agent_id: "svc-a",
          value: 3,
          tags: { route: "/checkout", "otel.temporality": "cumulative" },
        });
        expect((await rowsOf(a, `${prefix}.latency.count`, 1))[0].value).toBe(2);
        expect((await rowsOf(a, `${prefix}.latency.sum`, 1))[0].value).toBe(42);
        expect((await rowsOf(a, `${prefix}.latency.min`, 1))[0].value).toBe(12);
        expect((await rowsOf(a, `${prefix}.latency.max`, 1))[0].value).toBe(30);
        expect((await rowsOf(a, `${prefix}.temperature`, 1))[0]).toMatchObject({ value: 21.5, tags: { room: "lab" } });
      });
    }

    it("with an ingest token, the resource's host.name names the agent", async () => {
      const exporter = new ProtoExporter({
        url: `${t.url}/v1/metrics`,
        headers: { authorization: bearer(a.ingestToken) },
      });
      await exportThrough(exporter, { "service.name": "checkout", "host.name": "web-2" }, "by_host");

      expect((await rowsOf(a, "by_host.requests", 1))[0].agent_id).toBe("web-2");
    });

    it("answers refused points with partialSuccess and stores the others (JSON and protobuf)", async () => {
      const body = {
        resourceMetrics: [
          {
            resource: { attributes: [{ key: "host.name", value: { stringValue: "web-3" } }] },
            scopeMetrics: [
              {
                metrics: [
                  { name: "partial_ok", gauge: { dataPoints: [{ asDouble: 1 }, { asDouble: "NaN" }] } },
                  { name: "bad name", gauge: { dataPoints: [{ asDouble: 2 }] } },
                ],
              },
            ],
          },
        ],
      };
      const answer = await post(a.ingestToken, "application/json", JSON.stringify(body));
      expect(answer.status).toBe(200);
      expect(await answer.json()).toEqual({
        partialSuccess: {
          rejectedDataPoints: "2",
          errorMessage: expect.stringMatching(/^2 data points refused; the first bad_value/),
        },
      });
      expect((await rowsOf(a, "partial_ok", 1))[0].agent_id).toBe("web-3");
    });

    it("refuses hostile bodies with their 4xx, as a google.rpc.Status, and keeps serving", async () => {
      const garbage = await post(a.ingestToken, "application/x-protobuf", Buffer.from([0xff, 0xff, 0xff, 0x01]));
      expect(garbage.status).toBe(400);
      const status = Status.decode(new Uint8Array(await garbage.arrayBuffer())) as unknown as {
        code: number;
        message: string;
      };
      expect(status.code).toBe(3);
      expect(status.message).toMatch(/^bad_otlp: /);
      // A field that claims four gigabytes of resource metrics.
      const claimed = await post(
        a.ingestToken,
        "application/x-protobuf",
        Buffer.from([0x0a, 0xff, 0xff, 0xff, 0xff, 0x0f]),
      );
      expect(claimed.status).toBe(400);
      const notJson = await post(a.ingestToken, "application/json", "{");
      expect(notJson.status).toBe(400);
      expect(await notJson.json()).toMatchObject({ code: 3, message: expect.stringMatching(/^bad_otlp/) });
      const bomb = await post(a.ingestToken, "application/x-protobuf", gzipSync(Buffer.alloc(50 * 1024 * 1024)), {
        "content-encoding": "gzip",
      });
      expect(bomb.status).toBe(413);
      expect((await post(a.ingestToken, "text/plain", "x")).status).toBe(415);
      expect((await request(`${t.url}/healthz`)).status).toBe(200);
    });

    it("keeps every tenant in its lane: a resource naming another tenant's agent writes into the token's own tenant", async () => {
      const body = {
        resourceMetrics: [
          {
            resource: { attributes: [{ key: "edge_ingest.agent_id", value: { stringValue: "svc-b" } }] },
            scopeMetrics: [{ metrics: [{ name: "otlp_lane", gauge: { dataPoints: [{ asDouble: 1 }] } }] }],
          },
        ],
      };
      expect((await post(a.ingestToken, "application/json", JSON.stringify(body))).status).toBe(200);
      expect((await rowsOf(a, "otlp_lane", 1))[0].agent_id).toBe("svc-b");
      const asAgent = await post(`${a.agent.username}.${a.agent.password}`, "application/json", JSON.stringify(body));
      expect(
        ((await asAgent.json()) as { partialSuccess: { errorMessage: string } }).partialSuccess.errorMessage,
      ).toMatch(/bad_agent_id/);
      expect((await post(b.viewerToken, "application/json", JSON.stringify(body))).status).toBe(403);
      await new Promise((resolve) => setTimeout(resolve, 300));
      const seenByB = await request(`${t.url}/api/v1/metrics?name=otlp_lane`, { auth: bearer(b.viewerToken) });
      expect(seenByB.body.items).toEqual([]);
    });
  });
}
