import { describe, expect, it } from "vitest";
import { TokenBucket } from "../../src/limits/token-bucket.ts";

describe("TokenBucket", () => {
  it("starts full, refills at its rate and never holds more than its burst", () => {
    const bucket = new TokenBucket(100, 50, 0);
    expect(bucket.waitFor(50, 0)).toBe(0);
    expect(bucket.take(50, 0)).toBe(0);
    expect(bucket.waitFor(10, 0)).toBe(100);
    expect(bucket.waitFor(10, 100)).toBe(0);
    expect(bucket.isFull(10_000)).toBe(true);
    expect(bucket.take(51, 10_000)).toBe(10);
  });

  it("takes into debt and says how long the debt lasts", () => {
    const bucket = new TokenBucket(1000, 1000, 0);
    expect(bucket.take(3000, 0)).toBe(2000);
    expect(bucket.take(0, 1000)).toBe(1000);
    expect(bucket.take(0, 2000)).toBe(0);
  });

  it("asks a request larger than the burst to wait only for a full bucket", () => {
    const bucket = new TokenBucket(10, 100, 0);
    bucket.take(100, 0);
    expect(bucket.waitFor(500, 0)).toBe(10_000);
    expect(bucket.waitFor(500, 10_000)).toBe(0);
  });

  it("hands out whole tokens up to what it holds, with the wait for what was needed", () => {
    const bucket = new TokenBucket(100, 100, 0);
    expect(bucket.takeUpTo(30, 30, 0)).toEqual({ granted: 30, waitMs: 0 });
    expect(bucket.takeUpTo(200, 150, 0)).toEqual({ granted: 70, waitMs: 800 });
    expect(bucket.takeUpTo(10, 0, 0)).toEqual({ granted: 0, waitMs: 0 });
  });

  it("keeps its tokens when its rate changes, up to the new burst", () => {
    const bucket = new TokenBucket(100, 100, 0);
    bucket.configure(10, 20, 0);
    expect(bucket.waitFor(20, 0)).toBe(0);
    expect(bucket.waitFor(21, 0)).toBe(0);
    bucket.take(20, 0);
    expect(bucket.waitFor(10, 0)).toBe(1000);
  });
});
