import { describe, expect, it } from "vitest";
import { parseMember, presenceMember, RedisPresence } from "../../src/presence/presence.ts";
import { redisForStores } from "../helpers/services.ts";

const stores = await redisForStores();
const LEASE_MS = 30_000;

describe.skipIf(stores.skip)("presence in Redis", () => {
  const presence = (prefix = stores.prefix(), leaseMs = LEASE_MS) =>
    new RedisPresence(stores.redis, prefix, leaseMs, () => undefined);

  it("counts a tenant's connections on every broker against its quota, and frees a place on release", async () => {
    const registry = presence();
    const first = presenceMember("broker-a", 1, "t/agent-1");
    const second = presenceMember("broker-b", 1, "t/agent-2");
    expect(await registry.admit("t", first, 2)).toBe(true);
    expect(await registry.admit("t", second, 2)).toBe(true);
    expect(await registry.admit("t", presenceMember("broker-a", 2, "t/agent-3"), 2)).toBe(false);
    await registry.release("t", first);
    expect(await registry.admit("t", presenceMember("broker-a", 3, "t/agent-3"), 2)).toBe(true);
    registry.close();
  });

  it("lets a client whose broker died connect again at once, in place of its connection still leased there", async () => {
    const registry = presence();
    // The tenant is at its quota, both connections on a broker that then dies without releasing them.
    expect(await registry.admit("t", presenceMember("dead", 1, "t/pump-1"), 2)).toBe(true);
    expect(await registry.admit("t", presenceMember("dead", 2, "t/pump-2"), 2)).toBe(true);
    // The same clients on another broker replace them, within the quota; another client still waits.
    const again = presenceMember("alive", 1, "t/pump-1");
    expect(await registry.admit("t", again, 2)).toBe(true);
    expect(await registry.admit("t", presenceMember("alive", 2, "t/pump-2"), 2)).toBe(true);
    expect(await registry.admit("t", presenceMember("alive", 3, "t/pump-3"), 2)).toBe(false);
    expect((await registry.members("t")).map((m) => parseMember(m).brokerId)).toEqual(["alive", "alive"]);
    // Releasing an old member no longer counted changes nothing; the new one's release frees its place.
    await registry.release("t", presenceMember("dead", 1, "t/pump-1"));
    expect(await registry.members("t")).toHaveLength(2);
    await registry.release("t", again);
    expect(await registry.admit("t", presenceMember("alive", 3, "t/pump-3"), 2)).toBe(true);
    registry.close();
  });

  it("renews a tenant's thousands of connections (in several script calls) past their first lease", async () => {
    const registry = presence(stores.prefix(), 3000);
    const members = Array.from({ length: 2500 }, (_, n) => presenceMember("a", n, `t/agent-${n}`));
    for (const member of members) expect(await registry.admit("t", member, 10_000)).toBe(true);
    await new Promise((resolve) => setTimeout(resolve, 4000));
    expect((await registry.members("t")).sort()).toEqual([...members].sort());
    registry.close();
  });

  it("refuses a client over the quota without dropping the connection it already has", async () => {
    const registry = presence();
    const held = presenceMember("a", 1, "t/pump-1");
    expect(await registry.admit("t", held, 1)).toBe(true);
    expect(await registry.admit("t", presenceMember("a", 2, "t/pump-2"), 1)).toBe(false);
    expect(await registry.members("t")).toEqual([held]);
    registry.close();
  });

  it("forgets the client ids of connections whose lease lapsed, so dead brokers leave nothing behind", async () => {
    const prefix = stores.prefix();
    const dead = presence(prefix, 3000);
    for (let n = 0; n < 3; n++)
      expect(await dead.admit("t", presenceMember("dead", n, `t/random-${n}`), 10)).toBe(true);
    // The broker dies: it renews nothing any more, and its clients never come back with those ids.
    // Another broker's connection keeps the tenant's keys alive meanwhile.
    dead.close();
    const alive = presence(prefix, 3000);
    const kept = presenceMember("alive", 0, "t/pump-0");
    expect(await alive.admit("t", kept, 10)).toBe(true);
    const clients = `${prefix}:presence-clients:t`;
    expect(await stores.redis.hlen(clients)).toBe(4);
    await new Promise((resolve) => setTimeout(resolve, 3500));
    const member = presenceMember("alive", 1, "t/pump-1");
    expect(await alive.admit("t", member, 10)).toBe(true);
    expect(await stores.redis.hgetall(clients)).toEqual({ "t/pump-0": kept, "t/pump-1": member });
    alive.close();
  });
});
