import { describe, expect, it } from "vitest";
import type { PayloadLimits } from "../../src/config.ts";
import { parseItems, parseNamedReading, parseReading, parseTimestamp } from "../../src/ingest/payload.ts";
import { Rejected } from "../../src/ingest/refusals.ts";

const limits: PayloadLimits = {
  maxBatchItems: 10,
  maxTags: 2,
  maxTagLength: 8,
  maxDedupeIdLength: 6,
  maxFutureSkewMs: 60_000,
  maxAgeMs: 30 * 86_400_000,
  maxLineFields: 4,
};
const now = Date.parse("2026-06-01T12:00:00Z");
const read = (raw: unknown) => parseReading(raw, "m", now, limits);
const reasonOf = (result: unknown) => (result instanceof Rejected ? result.reason : "accepted");

describe("parseReading", () => {
  it("takes a bare number, stamped with the receive time", () => {
    expect(read(42.5)).toEqual({ name: "m", value: 42.5, ts: now });
    expect(read(-1)).toEqual({ name: "m", value: -1, ts: now });
    expect(read(0)).toEqual({ name: "m", value: 0, ts: now });
  });

  it("takes an object with value, timestamp, dedupe_id and tags", () => {
    expect(read({ value: 1, timestamp: "2026-06-01T11:00:00.250Z", dedupe_id: "abc", tags: { a: "b" } })).toEqual({
      name: "m",
      value: 1,
      ts: Date.parse("2026-06-01T11:00:00.250Z"),
      dedupeId: "abc",
      tags: { a: "b" },
    });
  });

  it("reads epoch seconds and epoch milliseconds", () => {
    const seconds = Math.floor(now / 1000) - 10;
    expect(read({ value: 1, timestamp: seconds })).toMatchObject({ ts: seconds * 1000 });
    expect(read({ value: 1, timestamp: seconds + 0.5 })).toMatchObject({ ts: seconds * 1000 + 500 });
    expect(read({ value: 1, timestamp: now - 10 })).toMatchObject({ ts: now - 10 });
  });

  it("reads ISO-8601 with any zone", () => {
    expect(read({ value: 1, timestamp: "2026-06-01T13:00:00+02:00" })).toMatchObject({
      ts: Date.parse("2026-06-01T11:00:00Z"),
    });
    expect(read({ value: 1, timestamp: "2026-06-01T11:00Z" })).toMatchObject({
      ts: Date.parse("2026-06-01T11:00:00Z"),
    });
  });

  it.each([
    ["a string", "12"],
    ["null", null],
    ["a boolean", true],
    ["an array", [1]],
    ["a missing value", { timestamp: 1 }],
    ["a string value", { value: "1" }],
    ["a null value", { value: null }],
    ["an infinite value", Number.POSITIVE_INFINITY],
    ["NaN", Number.NaN],
    ["an object value", { value: { v: 1 } }],
  ])("refuses %s as bad_value", (_label, raw) => {
    expect(reasonOf(read(raw))).toBe("bad_value");
  });

  it.each([
    ["words", "yesterday"],
    ["a date without time", "2026-06-01"],
    ["a time without zone", "2026-06-01T11:00:00"],
    ["an impossible date", "2026-13-45T11:00:00Z"],
    ["a negative epoch", -5],
    ["a numeric string", "1767225600"],
    ["a boolean", true],
    ["too far in the future", now + 120_000],
    ["an ISO time too far in the future", "2030-01-01T00:00:00Z"],
  ])("refuses %s as bad_timestamp", (_label, timestamp) => {
    expect(reasonOf(read({ value: 1, timestamp }))).toBe("bad_timestamp");
  });

  it("refuses a reading older than the retention as too_old, and takes one just within it", () => {
    expect(reasonOf(read({ value: 1, timestamp: now - 31 * 86_400_000 }))).toBe("too_old");
    expect(reasonOf(read({ value: 1, timestamp: new Date(now - 31 * 86_400_000).toISOString() }))).toBe("too_old");
    expect(reasonOf(read({ value: 1, timestamp: now - 29 * 86_400_000 }))).toBe("accepted");
  });

  it.each([
    ["a NUL", "a\u0000"],
    ["half a surrogate pair", "\ud800x"],
  ])("refuses a dedupe_id with %s", (_label, dedupe_id) => {
    expect(reasonOf(read({ value: 1, dedupe_id }))).toBe("bad_dedupe_id");
  });

  it("accepts a timestamp within the allowed clock skew", () => {
    expect(reasonOf(read({ value: 1, timestamp: now + 30_000 }))).toBe("accepted");
  });

  it.each([
    ["empty", ""],
    ["too long", "1234567"],
    ["a number", 12],
  ])("refuses a dedupe_id that is %s", (_label, dedupe_id) => {
    expect(reasonOf(read({ value: 1, dedupe_id }))).toBe("bad_dedupe_id");
  });

  it.each([
    ["an array", ["a"]],
    ["a string", "a=b"],
    ["too many tags", { a: "1", b: "2", c: "3" }],
    ["a numeric tag value", { a: 1 }],
    ["a long tag value", { a: "123456789" }],
    ["a long tag name", { abcdefghi: "1" }],
    ["an empty tag name", { "": "1" }],
  ])("refuses tags that are %s", (_label, tags) => {
    expect(reasonOf(read({ value: 1, tags }))).toBe("bad_tags");
  });

  it("keeps a tag named like a field of a rejection", () => {
    expect(read({ value: 1, tags: { reason: "x", message: "y" } })).toMatchObject({
      tags: { reason: "x", message: "y" },
    });
  });

  it("drops an empty tags object", () => {
    expect(read({ value: 1, tags: {} })).toEqual({ name: "m", value: 1, ts: now });
  });
});

describe("parseNamedReading", () => {
  it("takes the name from the item", () => {
    expect(parseNamedReading({ name: "cpu.load:1m", value: 0.5 }, now, limits)).toMatchObject({ name: "cpu.load:1m" });
  });

  it.each([["bad name!"], [""], ["x".repeat(129)], [5], [undefined], ["a/b"], ["#"], ["+"]])(
    "refuses the name %j as bad_name",
    (name) => {
      expect(reasonOf(parseNamedReading({ name, value: 1 }, now, limits))).toBe("bad_name");
    },
  );

  it("refuses an item that is not an object", () => {
    expect(reasonOf(parseNamedReading(3, now, limits))).toBe("bad_value");
  });
});

describe("parseItems", () => {
  it("keeps the valid items next to the refused ones and says which were refused", () => {
    const batch = parseItems([{ name: "a", value: 1 }, { name: "a" }, { name: "b", value: 2 }], (item) =>
      parseNamedReading(item, now, limits),
    );
    expect(batch.points.map((p) => p.name)).toEqual(["a", "b"]);
    expect(batch.rejected).toEqual([{ index: 1, reason: "bad_value", message: "value must be a finite number" }]);
  });
});

describe("parseTimestamp", () => {
  it("defaults to the receive time", () => {
    expect(parseTimestamp(undefined, now, limits)).toBe(now);
  });
});
