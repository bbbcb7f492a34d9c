import pino from "pino";
import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import { rateLimitedLog } from "../src/logger.ts";

/** A pino logger whose lines land in `lines`, parsed. */
function capture() {
  const lines: { msg: string; suppressed?: number; written?: number }[] = [];
  const logger = pino({ level: "info" }, { write: (line: string) => lines.push(JSON.parse(line)) });
  return { lines, logger };
}

describe("rateLimitedLog", () => {
  beforeEach(() => vi.useFakeTimers());
  afterEach(() => vi.useRealTimers());

  it("says, when the interval ends, how many lines a burst held back, though nothing is logged after it", () => {
    const { lines, logger } = capture();
    const log = rateLimitedLog(logger, 20, 10_000);
    for (let i = 0; i < 4000; i++) log({ i }, "publish rejected");
    expect(lines).toHaveLength(20);
    vi.advanceTimersByTime(9_999);
    expect(lines).toHaveLength(20);
    vi.advanceTimersByTime(1);
    expect(lines).toHaveLength(21);
    expect(lines[20]).toMatchObject({
      suppressed: 3980,
      written: 20,
      msg: "publish rejected: 3980 more like this in 10 s were not written",
    });
    vi.advanceTimersByTime(60_000);
    expect(lines).toHaveLength(21);
  });

  it("sums up each interval of a steady stream", () => {
    const { lines, logger } = capture();
    const log = rateLimitedLog(logger, 5, 1000);
    // 10 a second for 3 s.
    for (let i = 0; i < 30; i++) {
      log({}, "cannot reach Redis");
      vi.advanceTimersByTime(100);
    }
    vi.advanceTimersByTime(1000);
    const summaries = lines.filter((line) => line.suppressed !== undefined);
    expect(summaries.map((line) => line.suppressed)).toEqual([5, 5, 5]);
    expect(lines).toHaveLength(18);
  });

  it("writes no summary when it held nothing back", () => {
    const { lines, logger } = capture();
    const log = rateLimitedLog(logger, 5, 1000);
    log({}, "one");
    vi.advanceTimersByTime(5000);
    log({}, "two");
    vi.advanceTimersByTime(5000);
    expect(lines.map((line) => line.msg)).toEqual(["one", "two"]);
  });
});
