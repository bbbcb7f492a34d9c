import { describe, expect, it } from "vitest";
import { LocalSessionExpiry, RedisSessionExpiry, type SessionExpiryStore } from "../../src/broker/session-expiry.ts";
import { redisForStores } from "../helpers/services.ts";

const stores = await redisForStores();

for (const { name, make, skip } of [
  { name: "in memory", make: (): SessionExpiryStore => new LocalSessionExpiry(), skip: false },
  {
    name: "in Redis",
    make: (): SessionExpiryStore => new RedisSessionExpiry(stores.redis, stores.prefix()),
    skip: stores.skip,
  },
]) {
  describe.skipIf(skip)(`the session expiry store (${name})`, () => {
    it("ends a session after its client's last connection left, once, and not while it is back", async () => {
      const store = make();
      const first = await store.connected("c");
      await store.disconnected("c", first, 1000);
      expect(await store.waiting()).toBe(1);
      expect(await store.claimExpired(999, 10)).toEqual([]);
      const back = await store.connected("c");
      expect(await store.claimExpired(5000, 10)).toEqual([]);
      await store.disconnected("c", back, 2000);
      expect(await store.claimExpired(5000, 10)).toEqual(["c"]);
      expect(await store.claimExpired(5000, 10)).toEqual([]);
    });

    it("schedules nothing for a connection that was taken over, or whose id came back with a clean session", async () => {
      const store = make();
      const old = await store.connected("t");
      await store.connected("t");
      await store.disconnected("t", old, 1000);
      expect(await store.waiting()).toBe(0);

      const persistent = await store.connected("x");
      await store.cleared("x");
      await store.disconnected("x", persistent, 1000);
      expect(await store.waiting()).toBe(0);
      expect(await store.claimExpired(5000, 10)).toEqual([]);
    });
  });
}
