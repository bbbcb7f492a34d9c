import { describe, expect, it } from "vitest";
import {
  countByReason,
  LocalRejectionHistory,
  pageOf,
  RedisRejectionHistory,
  type RejectionHistory,
} from "../../src/live/rejection-history.ts";
import type { LiveRejection } from "../../src/live/rejections.ts";
import { redisForStores } from "../helpers/services.ts";

const stores = await redisForStores();
const HOUR = 3_600_000;

const refusal = (agent: string, reason: string, count = 1): LiveRejection => ({
  agent_id: agent,
  source: "http",
  reason: reason as LiveRejection["reason"],
  message: `${reason} from ${agent}`,
  count,
  at: new Date().toISOString(),
});

/** Every page of a tenant's history, `limit` at a time. */
async function allPages(history: RejectionHistory, tenantId: string, limit: number, agentId?: string) {
  const pages = [];
  let before: string | undefined;
  const recent = await history.recent(tenantId);
  do {
    const page = pageOf(recent, { limit, before, agentId });
    pages.push(page.items.map((r) => r.message));
    before = page.next;
  } while (before);
  return pages;
}

const kinds: { name: string; skip: boolean; make: (max: number) => RejectionHistory }[] = [
  { name: "in memory", skip: false, make: (max) => new LocalRejectionHistory({ maxPerTenant: max, windowMs: HOUR }) },
  {
    name: "in Redis",
    skip: stores.skip,
    make: (max) => new RedisRejectionHistory(stores.redis, stores.prefix(), { maxPerTenant: max, windowMs: HOUR }),
  },
];

for (const { name, skip, make } of kinds) {
  describe.skipIf(skip)(`rejection history ${name}`, () => {
    it("pages a tenant's refusals newest first, one agent's if asked, and counts them by reason", async () => {
      const history = make(100);
      await history.record("t", refusal("a", "bad_value", 3));
      await history.record("t", refusal("b", "too_old"));
      await history.record("t", refusal("a", "bad_value", 2));
      await history.record("other", refusal("a", "bad_json"));
      expect(await allPages(history, "t", 2)).toEqual([["bad_value from a", "too_old from b"], ["bad_value from a"]]);
      expect(await allPages(history, "t", 1, "a")).toEqual([["bad_value from a"], ["bad_value from a"]]);
      expect(countByReason(await history.recent("t"))).toEqual([
        { reason: "bad_value", count: 5 },
        { reason: "too_old", count: 1 },
      ]);
      expect(await allPages(history, "nobody", 10)).toEqual([[]]);
    });

    it("keeps the newest REJECTION_HISTORY_MAX of a tenant", async () => {
      const history = make(5);
      for (let i = 0; i < 300; i++) await history.record("t", refusal(`agent-${i}`, "bad_value"));
      expect((await history.recent("t")).map((r) => r.agent_id)).toEqual([
        "agent-299",
        "agent-298",
        "agent-297",
        "agent-296",
        "agent-295",
      ]);
    });
  });
}

describe("rejection history in memory", () => {
  it("forgets a refusal older than the window", async () => {
    let now = 1_000_000;
    const history = new LocalRejectionHistory({ maxPerTenant: 10, windowMs: HOUR }, () => now);
    await history.record("t", refusal("a", "bad_value"));
    now += HOUR / 2;
    await history.record("t", refusal("b", "too_old"));
    now += HOUR / 2 + 1;
    expect((await history.recent("t")).map((r) => r.agent_id)).toEqual(["b"]);
  });
});
