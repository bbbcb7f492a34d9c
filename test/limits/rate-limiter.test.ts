import { afterEach, describe, expect, it } from "vitest";
import type { LimitsSource } from "../../src/limits/limits-store.ts";
import { RateLimiter } from "../../src/limits/rate-limiter.ts";
import type { TenantLimits } from "../../src/limits/tenant-limits.ts";
import { LocalTenantTokens } from "../../src/limits/tenant-tokens.ts";

const limits: TenantLimits = {
  agentReadingsPerSecond: 100,
  agentReadingsBurst: 100,
  agentBytesPerSecond: 10_000,
  agentBytesBurst: 10_000,
  tenantReadingsPerSecond: 150,
  tenantReadingsBurst: 150,
  maxConnections: 10,
};
const source = (l: TenantLimits): LimitsSource => ({ defaults: l, current: () => l, get: async () => l });
const fixed = source(limits);
/** The same agent limits, with a tenant limit too large to be the one that holds. */
const roomy = source({ ...limits, tenantReadingsPerSecond: 1_000_000, tenantReadingsBurst: 1_000_000 });
const A = { tenantId: "tenant-a", key: "tenant-a/dev-1" };
const A2 = { tenantId: "tenant-a", key: "tenant-a/dev-2" };

describe("RateLimiter", () => {
  let limiter: RateLimiter;
  afterEach(() => limiter.close());

  it("holds a sender in debt to its tenant until leases have paid the debt", async () => {
    limiter = new RateLimiter(fixed, new LocalTenantTokens(), () => undefined);
    await limiter.prepare(A.tenantId);
    // The first lease is a tenth of a second's worth (15): 100 readings leave a debt of 85.
    const first = limiter.charge(A, 100, 10);
    expect(first.waitMs).toBe(0);
    expect(await first.settled).toBe(0);
    // That lease paid the debt out of the tenant's burst (150); 60 more take the bucket below empty,
    // so the last ~9 of this debt are paid only as the bucket refills, at 150 a second (~60 ms).
    const started = Date.now();
    const second = limiter.charge(A2, 60, 10);
    expect(second.settled).toBeDefined();
    await second.settled;
    expect(Date.now() - started).toBeGreaterThanOrEqual(40);
    expect(limiter.charge(A2, 0, 0)).toEqual({ waitMs: 0 });
  });

  it("lets an agent send its burst, then asks it to wait as long as its debt lasts", async () => {
    limiter = new RateLimiter(roomy, new LocalTenantTokens(), () => undefined);
    await limiter.prepare(A.tenantId);
    expect(limiter.charge(A, 100, 100, 0).waitMs).toBe(0);
    expect(limiter.charge(A, 50, 100, 0)).toEqual({ waitMs: 500, limit: "agent_readings" });
  });

  it("holds back a sender over its bytes", async () => {
    limiter = new RateLimiter(roomy, new LocalTenantTokens(), () => undefined);
    await limiter.prepare(A.tenantId);
    expect(limiter.charge(A, 1, 30_000, 0)).toEqual({ waitMs: 2000, limit: "agent_bytes" });
  });

  it("holds a tenant's agents together to the tenant's rate", async () => {
    limiter = new RateLimiter(fixed, new LocalTenantTokens(), () => undefined);
    const now = Date.now();
    expect((await limiter.tryCharge(A, 100, 10)).waitMs).toBe(0);
    const second = await limiter.tryCharge(A2, 100, 10);
    expect(second.limit).toBe("tenant_readings");
    expect(second.waitMs).toBeGreaterThan(0);
    // Nothing was taken for the refused request: the second agent's own bucket is still full.
    expect(limiter.charge(A2, 100, 10, now).limit).not.toBe("agent_readings");
  });

  it("answers a request that fits with no wait, and charges it", async () => {
    limiter = new RateLimiter(roomy, new LocalTenantTokens(), () => undefined);
    expect(await limiter.tryCharge(A, 60, 10)).toEqual({ waitMs: 0 });
    expect(await limiter.tryCharge(A, 60, 10)).toMatchObject({ limit: "agent_readings" });
  });

  it("lifts the tenant limit while its shared bucket cannot be reached, and says so", async () => {
    const errors: Error[] = [];
    limiter = new RateLimiter(fixed, { lease: () => Promise.reject(new Error("Redis is down")) }, (error) =>
      errors.push(error),
    );
    expect((await limiter.tryCharge(A, 100, 10)).waitMs).toBe(0);
    expect(errors.map((e) => e.message)).toEqual(["Redis is down"]);
  });

  it("limits a connection outside every tenant by the default agent limits only", () => {
    limiter = new RateLimiter(fixed, new LocalTenantTokens(), () => undefined);
    expect(limiter.charge({ key: "anonymous/x" }, 300, 10, 0)).toEqual({ waitMs: 2000, limit: "agent_readings" });
  });
});
