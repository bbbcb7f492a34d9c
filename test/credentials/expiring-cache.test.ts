import { describe, expect, it } from "vitest";
import { ExpiringCache } from "../../src/credentials/expiring-cache.ts";

describe("ExpiringCache", () => {
  it("forgets an entry once its time is up", () => {
    const cache = new ExpiringCache<string>(1000);
    cache.set("a", "x", 0);
    expect(cache.get("a", 999)).toBe("x");
    expect(cache.get("a", 1000)).toBeUndefined();
  });

  it("holds at most its bound however many keys a client invents, dropping the oldest written", () => {
    const cache = new ExpiringCache<number>(60_000, 3);
    for (let i = 0; i < 1000; i++) cache.set(`ct_${i}`, i, 0);
    expect(cache.size).toBe(3);
    expect(cache.get("ct_996", 0)).toBeUndefined();
    expect(cache.get("ct_999", 0)).toBe(999);
    // Written again, a key is the newest: the next new key drops another.
    cache.set("ct_997", 997, 0);
    cache.set("new", -1, 0);
    expect(cache.get("ct_997", 0)).toBe(997);
    expect(cache.get("ct_998", 0)).toBeUndefined();
  });
});
