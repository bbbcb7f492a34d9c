import { describe, expect, it } from "vitest";
import type { PayloadLimits } from "../../src/config.ts";
import { agentRule } from "../../src/formats/agents.ts";
import { type LineReadings, metricNameOf, type Precision, readLineProtocol } from "../../src/formats/line-protocol.ts";
import { Rejected } from "../../src/ingest/refusals.ts";

const limits: PayloadLimits = {
  maxBatchItems: 6,
  maxTags: 3,
  maxTagLength: 16,
  maxDedupeIdLength: 128,
  maxFutureSkewMs: 60_000,
  maxAgeMs: 30 * 86_400_000,
  maxLineFields: 3,
};
const now = Date.parse("2026-06-01T12:00:00Z");
const nowNs = `${now}000000`;
const tenantId = "00000000-0000-4000-8000-000000000001";
const asAgent = agentRule({ kind: "agent", tenantId, agentId: "dev-1", username: "u" }, ["agent_id"], undefined);
const asIngest = (requested?: string) =>
  agentRule({ kind: "token", tenantId, role: "ingest" } as never, ["agent_id", "host"], requested);

function read(text: string, precision: Precision = "ns", agent = asAgent): LineReadings {
  const result = readLineProtocol(text, { precision, receivedAt: now, limits, agent });
  if (result instanceof Rejected) throw new Error(`refused whole: ${result.reason}`);
  return result;
}

describe("line protocol", () => {
  it("makes a reading of each numeric field, named measurement_field (a field called value: the measurement)", () => {
    const { points, rejected } = read(`cpu,core=0 usage=12.5,idle=80i,value=3u ${nowNs}`);
    expect(rejected).toEqual([]);
    expect(points.map((p) => [p.name, p.value, p.ts, p.tags, p.agentId])).toEqual([
      ["cpu_usage", 12.5, now, { core: "0" }, "dev-1"],
      ["cpu_idle", 80, now, { core: "0" }, "dev-1"],
      ["cpu", 3, now, { core: "0" }, "dev-1"],
    ]);
    expect(metricNameOf("mem", "used")).toBe("mem_used");
  });

  it("reads booleans as 1 and 0, floats in every notation, and the four precisions", () => {
    const { points } = read("s a=t,b=FALSE,c=-1.5e3\ns d=.5,e=+2.,f=1E2");
    expect(points.map((p) => p.value)).toEqual([1, 0, -1500, 0.5, 2, 100]);
    const ts = (line: string, precision: Precision) => read(line, precision).points[0]?.ts;
    expect(ts(`m v=1 ${now / 1000}`, "s")).toBe(now);
    expect(ts(`m v=1 ${now}`, "ms")).toBe(now);
    expect(ts(`m v=1 ${now}000`, "us")).toBe(now);
    expect(ts(`m v=1 ${now}123456`, "ns")).toBe(now);
    // As a float, 1780315200002000000 ns divided by 1e6 is 1780315200001.9998: the digits are read instead.
    expect(ts(`m v=1 ${now + 2}000000`, "ns")).toBe(now + 2);
  });

  it("resolves escaped commas, spaces and equals signs in names, keys and tag values", () => {
    const { points, rejected } = read(String.raw`disk\ io,path=/var\ lib\,x,k\=1=v read=1`);
    expect(rejected.map((r) => r.reason)).toEqual(["bad_name"]);
    const ok = read(String.raw`disk_io,path=/var\ lib\,x,k\=1=v read=1`);
    expect(ok.points[0]?.tags).toEqual({ path: "/var lib,x", "k=1": "v" });
    expect(points).toEqual([]);
  });

  it("judges every line on its own: a bad line in the middle costs itself, with its line number", () => {
    const { points, rejected } = read(["a value=1", "b value=", 'c value="unterminated', "d value=4"].join("\n"));
    expect(points.map((p) => p.name)).toEqual(["a", "d"]);
    expect(rejected).toEqual([
      { line: 2, reason: "bad_line", message: expect.stringContaining("field value") },
      { line: 3, reason: "bad_line", message: "a string field has no closing quote" },
    ]);
  });

  it("refuses string fields one by one and keeps the numeric fields of the same line", () => {
    const { points, rejected } = read('log level="warn, \\"high\\"",count=2i');
    expect(points.map((p) => [p.name, p.value])).toEqual([["log_count", 2]]);
    expect(rejected).toEqual([{ line: 1, reason: "bad_value", message: expect.stringContaining("string") }]);
  });

  it("skips comments, blank lines and carriage returns", () => {
    const { points, rejected } = read("# a comment\r\n\r\n  m v=1\r\n\n");
    expect(rejected).toEqual([]);
    expect(points).toHaveLength(1);
  });

  it("refuses what is not a line: no fields, a bad tag, a bad timestamp, NUL, too many fields", () => {
    const { points, rejected } = read(
      ["nofields", "m,t v=1", "m v=1 12.5", "m v=1 -5", "m v=\u00001", "m a=1,b=2,c=3,d=4"].join("\n"),
    );
    expect(points).toEqual([]);
    expect(rejected.map((r) => [r.line, r.reason])).toEqual([
      [1, "bad_line"],
      [2, "bad_line"],
      [3, "bad_line"],
      [4, "bad_timestamp"],
      [5, "bad_line"],
      [6, "bad_line"],
    ]);
  });

  it("refuses a whole body of more lines than the batch limit, and a body with no line", () => {
    const seven = Array.from({ length: 7 }, (_, i) => `m v=${i}`).join("\n");
    expect(readLineProtocol(seven, { precision: "ns", receivedAt: now, limits, agent: asAgent })).toMatchObject({
      reason: "too_many",
    });
    expect(readLineProtocol("\n# only\n", { precision: "ns", receivedAt: now, limits, agent: asAgent })).toMatchObject({
      reason: "bad_line",
    });
  });

  it("applies the reading limits: tags, future and past times", () => {
    const { rejected } = read(
      [
        "m,a=1,b=2,c=3,d=4 v=1",
        "m,a=12345678901234567 v=1",
        `m v=1 ${now + 3_600_000}000000`,
        `m v=1 ${now - 31 * 86_400_000}000000`,
      ].join("\n"),
    );
    expect(rejected.map((r) => r.reason)).toEqual(["bad_tags", "bad_tags", "bad_timestamp", "too_old"]);
  });

  it("an agent's credential: agent_id may only name itself and is not kept as a tag; host stays a tag", () => {
    const { points, rejected } = read("m,agent_id=dev-1,host=h v=1\nm,agent_id=dev-2 v=2");
    expect(points.map((p) => [p.agentId, p.tags])).toEqual([["dev-1", { host: "h" }]]);
    expect(rejected).toEqual([{ line: 2, reason: "bad_agent_id", message: expect.stringContaining("dev-2") }]);
  });

  it("an ingest token: the agent_id tag, else the host tag, else the request's agent_id names the agent", () => {
    const text = "m,agent_id=a1,host=h v=1\nm,host=h2 v=2\nm v=3\nm,host=bad/host v=4";
    const { points, rejected } = read(text, "ns", asIngest("fallback"));
    expect(points.map((p) => [p.agentId, p.tags])).toEqual([
      ["a1", { host: "h" }],
      ["h2", undefined],
      ["fallback", undefined],
    ]);
    expect(rejected.map((r) => [r.line, r.reason])).toEqual([[4, "bad_agent_id"]]);
    expect(read("m v=1", "ns", asIngest()).rejected.map((r) => r.reason)).toEqual(["bad_agent_id"]);
  });

  it("gives a point with its own time an id of agent, metric, time and tags, so a resend is stored once", () => {
    const line = `m,t=x v=1 ${nowNs}`;
    const [first] = read(line).points;
    const [again] = read(line).points;
    const [otherTag] = read(`m,t=y v=1 ${nowNs}`).points;
    const [untimed] = read("m,t=x v=1").points;
    expect(first?.dedupeId).toMatch(/^lp:[A-Za-z0-9_-]{32}$/);
    expect(again?.dedupeId).toBe(first?.dedupeId);
    expect(otherTag?.dedupeId).not.toBe(first?.dedupeId);
    expect(untimed?.dedupeId).toBeUndefined();
  });
});
