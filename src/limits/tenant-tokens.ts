import type { Redis } from "ioredis";
import { TokenBucket } from "./token-bucket.ts";

export interface Lease {
  granted: number;
  /** When fewer than the needed tokens were granted: how long until they will be there. */
  waitMs: number;
}

/**
 * A tenant's readings budget, one bucket for the whole deployment. Processes take tokens from it
 * in leases (a fraction of a second's worth at a time), so charging a reading costs no round trip.
 */
export interface TenantTokenSource {
  /** Takes up to `want` tokens from the tenant's bucket; `need` of them are what the caller cannot do without. */
  lease(tenantId: string, rate: number, burst: number, want: number, need: number): Promise<Lease>;
}

/** Embedded mode: every client of the tenant is in this process. */
export class LocalTenantTokens implements TenantTokenSource {
  private readonly buckets = new Map<string, TokenBucket>();

  async lease(tenantId: string, rate: number, burst: number, want: number, need: number): Promise<Lease> {
    const now = Date.now();
    const bucket = this.buckets.get(tenantId) ?? new TokenBucket(rate, burst, now);
    this.buckets.set(tenantId, bucket);
    bucket.configure(rate, burst, now);
    return bucket.takeUpTo(want, need, now);
  }
}

// The same arithmetic as TokenBucket.takeUpTo, done atomically in Redis on Redis's own clock, so
// brokers with skewed clocks share one budget. KEYS[1]: the bucket; ARGV: rate, burst, want, need.
const LEASE_SCRIPT = `
local rate = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local want = tonumber(ARGV[3])
local need = tonumber(ARGV[4])
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
local state = redis.call('HMGET', KEYS[1], 'tokens', 'at')
local tokens = tonumber(state[1]) or burst
local at = tonumber(state[2]) or now
if now > at then tokens = math.min(burst, tokens + (now - at) * rate / 1000) end
local granted = math.max(0, math.min(want, math.floor(tokens)))
tokens = tokens - granted
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'at', now)
redis.call('PEXPIRE', KEYS[1], math.ceil(burst * 1000 / rate) + 60000)
local wait = 0
if granted < need then wait = math.ceil((need - granted - tokens) * 1000 / rate) end
return {granted, wait}
`;

type LeaseCommand = (key: string, rate: number, burst: number, want: number, need: number) => Promise<[number, number]>;

/** Distributed mode: the bucket lives in Redis, shared by every broker and API process. */
export class RedisTenantTokens implements TenantTokenSource {
  private readonly leaseCommand: LeaseCommand;

  constructor(
    redis: Redis,
    private readonly prefix: string,
  ) {
    redis.defineCommand("edgeIngestLease", { numberOfKeys: 1, lua: LEASE_SCRIPT });
    const command = (redis as unknown as { edgeIngestLease: LeaseCommand }).edgeIngestLease;
    this.leaseCommand = command.bind(redis);
  }

  async lease(tenantId: string, rate: number, burst: number, want: number, need: number): Promise<Lease> {
    const [granted, waitMs] = await this.leaseCommand(`${this.prefix}:rate:${tenantId}`, rate, burst, want, need);
    return { granted: Number(granted), waitMs: Number(waitMs) };
  }
}
