import protobuf from "protobufjs";
import { describe, expect, it } from "vitest";
import type { PayloadLimits } from "../../src/config.ts";
import { agentRule } from "../../src/formats/agents.ts";
import { type OtlpReadings, readOtlpMetrics } from "../../src/formats/otlp.ts";
import type { Int64, OtlpMetric, OtlpMetricsRequest } from "../../src/formats/otlp-proto.ts";
import { Rejected } from "../../src/ingest/refusals.ts";

const limits: PayloadLimits = {
  maxBatchItems: 10,
  maxTags: 3,
  maxTagLength: 32,
  maxDedupeIdLength: 128,
  maxFutureSkewMs: 60_000,
  maxAgeMs: 30 * 86_400_000,
  maxLineFields: 10,
};
const now = Date.parse("2026-06-01T12:00:00Z");
const nanos = (ms: number) => `${ms}000000`;
const tenantId = "00000000-0000-4000-8000-000000000001";
const asIngest = agentRule({ kind: "token", tenantId, role: "ingest", username: "t" }, [
  "edge_ingest.agent_id",
  "host.name",
  "service.name",
]);
const asAgent = agentRule({ kind: "agent", tenantId, agentId: "dev-1", username: "u" }, ["edge_ingest.agent_id"]);
const attribute = (key: string, value: string) => ({ key, value: { stringValue: value } });

function exportOf(metrics: OtlpMetric[], resource = [attribute("host.name", "web-1")]): OtlpMetricsRequest {
  return { resourceMetrics: [{ resource: { attributes: resource }, scopeMetrics: [{ metrics }] }] };
}

function read(request: OtlpMetricsRequest, agent = asIngest): OtlpReadings {
  const result = readOtlpMetrics(request, { receivedAt: now, limits, agent });
  if (result instanceof Rejected) throw new Error(`refused whole: ${result.reason}`);
  return result;
}

describe("OTLP metrics to readings", () => {
  it("a gauge's and a sum's points are readings; the sum's temporality is a tag; attributes are tags", () => {
    const { points, rejected } = read(
      exportOf([
        {
          name: "temperature",
          gauge: { dataPoints: [{ timeUnixNano: nanos(now), asDouble: 21.5, attributes: [attribute("room", "lab")] }] },
        },
        {
          name: "requests",
          sum: {
            aggregationTemporality: 2,
            dataPoints: [
              { timeUnixNano: nanos(now), asInt: "42", attributes: [{ key: "ok", value: { boolValue: true } }] },
            ],
          },
        },
        { name: "errors", sum: { aggregationTemporality: 1, dataPoints: [{ timeUnixNano: nanos(now), asInt: 3 }] } },
      ]),
    );
    expect(rejected).toEqual([]);
    expect(points.map((p) => [p.agentId, p.name, p.value, p.ts, p.tags])).toEqual([
      ["web-1", "temperature", 21.5, now, { room: "lab" }],
      ["web-1", "requests", 42, now, { ok: "true", "otel.temporality": "cumulative" }],
      ["web-1", "errors", 3, now, { "otel.temporality": "delta" }],
    ]);
  });

  it("a histogram is its count, sum, min and max; a summary its count, sum and quantiles", () => {
    const { points } = read(
      exportOf([
        {
          name: "latency",
          histogram: {
            aggregationTemporality: 2,
            dataPoints: [{ timeUnixNano: nanos(now), count: "2", sum: 42, min: 12, max: 30 }],
          },
        },
        {
          name: "size",
          exponentialHistogram: { aggregationTemporality: 1, dataPoints: [{ timeUnixNano: nanos(now), count: 1 }] },
        },
        {
          name: "rtt",
          summary: {
            dataPoints: [
              { timeUnixNano: nanos(now), count: 4, sum: 10, quantileValues: [{ quantile: 0.99, value: 5 }] },
            ],
          },
        },
      ]),
    );
    expect(points.map((p) => [p.name, p.value, p.tags])).toEqual([
      ["latency.count", 2, { "otel.temporality": "cumulative" }],
      ["latency.sum", 42, { "otel.temporality": "cumulative" }],
      ["latency.min", 12, { "otel.temporality": "cumulative" }],
      ["latency.max", 30, { "otel.temporality": "cumulative" }],
      ["size.count", 1, { "otel.temporality": "delta" }],
      ["rtt.count", 4, undefined],
      ["rtt.sum", 10, undefined],
      ["rtt", 5, { quantile: "0.99" }],
    ]);
  });

  it("refuses a data point on its own, with its reason, and keeps the others", () => {
    const { points, rejected } = read(
      exportOf([
        { name: "bad name!", gauge: { dataPoints: [{ asDouble: 1 }, { asDouble: 2 }] } },
        { name: "nan", gauge: { dataPoints: [{ asDouble: "NaN" }, { asDouble: 4 }] } },
        { name: "old", gauge: { dataPoints: [{ timeUnixNano: nanos(now - 31 * 86_400_000), asDouble: 1 }] } },
        {
          name: "tagged",
          gauge: { dataPoints: [{ asDouble: 1, attributes: ["a", "b", "c", "d"].map((k) => attribute(k, k)) }] },
        },
      ]),
    );
    expect(points.map((p) => [p.name, p.value, p.ts])).toEqual([["nan", 4, now]]);
    expect(rejected.map((r) => r.reason)).toEqual(["bad_name", "bad_name", "bad_value", "too_old", "bad_tags"]);
  });

  it("reads a point's nanoseconds to the exact millisecond, whether a string, a number or a protobuf Long", () => {
    const Long = protobuf.util.Long as unknown as { fromString(digits: string, unsigned: boolean): Int64 };
    const times = [`${now + 2}000000`, (now + 2) * 1e6, Long.fromString(`${now + 2}000000`, true)];
    for (const timeUnixNano of times) {
      const [point] = read(exportOf([{ name: "m", gauge: { dataPoints: [{ timeUnixNano, asDouble: 1 }] } }])).points;
      expect(point?.ts).toBe(now + 2);
    }
  });

  it("skips a point marked as having no recorded value", () => {
    const { points, rejected } = read(exportOf([{ name: "stale", gauge: { dataPoints: [{ flags: 1 }] } }]));
    expect(points).toEqual([]);
    expect(rejected).toEqual([]);
  });

  it("names the agent: edge_ingest.agent_id, then host.name, then service.name; an agent's credential is itself", () => {
    const agentOf = (resource: { key: string; value: { stringValue: string } }[], rule = asIngest) =>
      read(exportOf([{ name: "m", gauge: { dataPoints: [{ asDouble: 1 }] } }], resource), rule);
    expect(agentOf([attribute("service.name", "svc"), attribute("host.name", "h")]).points[0]?.agentId).toBe("h");
    expect(agentOf([attribute("service.name", "svc")]).points[0]?.agentId).toBe("svc");
    expect(agentOf([attribute("edge_ingest.agent_id", "x"), attribute("host.name", "h")]).points[0]?.agentId).toBe("x");
    expect(agentOf([attribute("service.name", "unknown_service:node")]).rejected[0]?.reason).toBe("bad_agent_id");
    expect(agentOf([]).rejected[0]?.reason).toBe("bad_agent_id");
    expect(agentOf([attribute("host.name", "h")], asAgent).points[0]?.agentId).toBe("dev-1");
    expect(agentOf([attribute("edge_ingest.agent_id", "dev-2")], asAgent).rejected[0]?.reason).toBe("bad_agent_id");
  });

  it("refuses a request of more data points than the batch limit whole, and ids timed points for dedupe", () => {
    const many = Array.from({ length: 11 }, () => ({ asDouble: 1 }));
    const refused = readOtlpMetrics(exportOf([{ name: "m", gauge: { dataPoints: many } }]), {
      receivedAt: now,
      limits,
      agent: asIngest,
    });
    expect(refused).toMatchObject({ reason: "too_many" });
    const timed = exportOf([{ name: "m", gauge: { dataPoints: [{ timeUnixNano: nanos(now), asDouble: 1 }] } }]);
    const [first] = read(timed).points;
    expect(first?.dedupeId).toMatch(/^otlp:/);
    expect(read(timed).points[0]?.dedupeId).toBe(first?.dedupeId);
  });
});
