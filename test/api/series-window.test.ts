import { describe, expect, it } from "vitest";
import { defaultSeriesStep } from "../../src/api/series-window.ts";

const MIN = 60_000;
const HOUR = 60 * MIN;

describe("defaultSeriesStep", () => {
  it.each([
    [15 * MIN, 10_000, 5_000],
    [HOUR, 10_000, 10_000],
    [6 * HOUR, 10_000, MIN],
    [24 * HOUR, 10_000, 5 * MIN],
    [7 * 24 * HOUR, 10_000, 30 * MIN],
    [HOUR, 100, MIN],
    [1000, 10_000, 1000],
  ])("a window of %i ms with at most %i buckets: %i ms", (window, maxPoints, step) => {
    expect(defaultSeriesStep(window, maxPoints)).toBe(step);
  });

  it("divides a window longer than 360 weeks into whole seconds", () => {
    const window = 400 * 7 * 24 * HOUR;
    const step = defaultSeriesStep(window, 10_000);
    expect(step % 1000).toBe(0);
    expect(Math.ceil(window / step)).toBeLessThanOrEqual(360);
  });
});
