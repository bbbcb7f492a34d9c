import { describe, expect, it } from "vitest";
import {
  LocalRetainedLedger,
  RedisRetainedLedger,
  type RetainedLedger,
  retainedRefusal,
} from "../../src/broker/retained-quota.ts";
import { redisForStores } from "../helpers/services.ts";

const limits = { maxMessages: 4, maxBytes: 100, maxMessagesPerPrincipal: 2, maxBytesPerPrincipal: 60 };
const none = { messages: 0, bytes: 0 };

describe("retainedRefusal", () => {
  it("allows a message within every limit", () => {
    expect(retainedRefusal(limits, none, none, "admin", 60, undefined)).toBeUndefined();
  });

  it("names the limit a message would break", () => {
    expect(retainedRefusal(limits, { messages: 4, bytes: 10 }, none, "admin", 1, undefined)).toMatch(/4 retained/);
    expect(retainedRefusal(limits, { messages: 1, bytes: 95 }, none, "admin", 10, undefined)).toMatch(/100 bytes/);
    expect(retainedRefusal(limits, none, { messages: 2, bytes: 2 }, "admin", 1, undefined)).toMatch(
      /principal holds its 2 retained/,
    );
    expect(retainedRefusal(limits, none, { messages: 1, bytes: 50 }, "admin", 11, undefined)).toMatch(
      /principal holds its 60 bytes/,
    );
  });

  it("counts a replaced message once, for whoever retained it", () => {
    const full = { messages: 2, bytes: 60 };
    expect(retainedRefusal(limits, full, full, "admin", 30, { owner: "admin", bytes: 30 })).toBeUndefined();
    expect(retainedRefusal(limits, full, none, "anonymous", 30, { owner: "admin", bytes: 30 })).toBeUndefined();
  });
});

describe("LocalRetainedLedger", () => {
  it("keeps account as messages are retained, replaced and cleared", async () => {
    const ledger = new LocalRetainedLedger(limits);
    expect(await ledger.claim("a", "admin", 30)).toBeUndefined();
    expect(await ledger.claim("b", "admin", 30)).toBeUndefined();
    expect(await ledger.claim("c", "admin", 1)).toMatch(/principal/);
    expect(await ledger.claim("a", "admin", 20)).toBeUndefined();
    expect(await ledger.claim("c", "anonymous", 45)).toBeUndefined();
    expect(await ledger.claim("d", "anonymous", 10)).toMatch(/100 bytes/);
    await ledger.release("c");
    expect(await ledger.claim("d", "anonymous", 10)).toBeUndefined();
  });
});

const stores = await redisForStores();

const ledgers: [string, boolean, (limits: typeof burstLimits) => RetainedLedger][] = [
  ["in this process", false, (burst) => new LocalRetainedLedger(burst)],
  ["in Redis", stores.skip, (burst) => new RedisRetainedLedger(stores.redis, stores.prefix(), burst)],
];
const burstLimits = {
  maxMessages: 10_000,
  maxBytes: 10_000_000,
  maxMessagesPerPrincipal: 1000,
  maxBytesPerPrincipal: 1_000_000,
};

describe.each(ledgers)("the retained ledger %s, claimed all at once", (_, skip, open) => {
  it.skipIf(skip)("keeps exactly the bound however many claims arrive together", async () => {
    const ledger = open(burstLimits);
    const claims = await Promise.all(
      Array.from({ length: 5000 }, (_, i) => ledger.claim(`burst/${i}`, "anonymous", 100)),
    );
    expect(claims.filter((refusal) => refusal === undefined)).toHaveLength(1000);
    // And the bytes, for another principal in the same burst.
    const bytes = await Promise.all(Array.from({ length: 50 }, (_, i) => ledger.claim(`big/${i}`, "admin", 30_000)));
    expect(bytes.filter((refusal) => refusal === undefined)).toHaveLength(33);
  });
});
