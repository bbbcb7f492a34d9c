import type { LimitsSource } from "./limits-store.ts";
import type { TenantLimits } from "./tenant-limits.ts";
import type { TenantTokenSource } from "./tenant-tokens.ts";
import { TokenBucket } from "./token-bucket.ts";

/** Which limit held a sender back. */
export type LimitName = "agent_readings" | "agent_bytes" | "tenant_readings";

export interface Throttle {
  /** How long the sender should wait before sending more (0: not at all). */
  waitMs: number;
  /** The limit that asks for the longest wait. */
  limit?: LimitName;
  /**
   * The sender's tenant is in debt: the sender should wait until this settles, when leases from the
   * tenant's shared bucket have paid the debt (it resolves to 0: nothing more to wait).
   */
  settled?: Promise<number>;
}

/** Who is charged: an agent of a tenant, or (no tenant) a connection outside every tenant. */
export interface Sender {
  tenantId?: string;
  /** The agent (`tenant/agent`) or connection whose own buckets are charged. */
  key: string;
}

/** A lease is this many seconds of the tenant's rate: a broker at full rate asks about ten times a second. */
const LEASE_SECONDS = 0.1;
/** Buckets unused for this long are forgotten (a full bucket is the same as a new one). */
const IDLE_MS = 60_000;

interface AgentBuckets {
  readings: TokenBucket;
  bytes: TokenBucket;
  usedAt: number;
}

interface TenantAccount {
  /** Leased tokens not used yet; below zero, a debt the next lease pays first. */
  available: number;
  /** The tenant's bucket is empty until then: no lease is asked for before. */
  blockedUntil: number;
  leasing?: Promise<void>;
  /** Settles once the debt is paid. */
  settling?: Promise<number>;
  usedAt: number;
}

const longest = (waits: [number, LimitName][]): Throttle => {
  let throttle: Throttle = { waitMs: 0 };
  for (const [waitMs, limit] of waits) if (waitMs > throttle.waitMs) throttle = { waitMs, limit };
  return throttle;
};

/**
 * Rate limits in the manner of EMQX's limiter: token buckets per agent (readings/s and bytes/s,
 * in this process) and per tenant (readings/s across every process, leased from a shared bucket).
 * MQTT charges what it has read and learns how long to stop reading the sender's socket; HTTP asks
 * first and answers 429 when a request does not fit.
 */
export class RateLimiter {
  private readonly agents = new Map<string, AgentBuckets>();
  private readonly tenants = new Map<string, TenantAccount>();
  private readonly sweeper: NodeJS.Timeout;

  constructor(
    private readonly limits: LimitsSource,
    private readonly tokens: TenantTokenSource,
    /** A lease that could not be had (the shared store is down): the limit is lifted meanwhile. */
    private readonly onLeaseError: (error: Error) => void,
  ) {
    this.sweeper = setInterval(() => this.forgetIdle(Date.now()), IDLE_MS).unref();
  }

  /** Leases a tenant's first tokens before its clients publish (at connect), so the first publish waits for nothing. */
  async prepare(tenantId: string): Promise<void> {
    const limits = await this.limits.get(tenantId);
    const account = this.account(tenantId, Date.now());
    if (account.available <= 0) await this.lease(tenantId, account, limits);
  }

  /** Charges what a sender has sent (already read: it may leave a debt) and says how long it should rest. */
  charge(sender: Sender, readings: number, bytes: number, now = Date.now()): Throttle {
    const limits = sender.tenantId ? this.limits.current(sender.tenantId) : this.limits.defaults;
    const agent = this.agent(sender.key, limits, now);
    const waits: [number, LimitName][] = [
      [agent.readings.take(readings, now), "agent_readings"],
      [agent.bytes.take(bytes, now), "agent_bytes"],
    ];
    const throttle = longest(waits);
    if (!sender.tenantId) return throttle;
    const account = this.takeTenant(sender.tenantId, readings, limits, now);
    return account.available >= 0 ? throttle : { ...throttle, settled: this.settle(sender.tenantId, account) };
  }

  /** Charges a request only if it fits now; otherwise charges nothing and says how long to wait. */
  async tryCharge(sender: Sender & { tenantId: string }, readings: number, bytes: number): Promise<Throttle> {
    const limits = await this.limits.get(sender.tenantId);
    const account = this.account(sender.tenantId, Date.now());
    const needed = Math.min(readings, limits.tenantReadingsBurst);
    if (account.available < needed && Date.now() >= account.blockedUntil) {
      await (account.leasing ?? this.lease(sender.tenantId, account, limits, readings));
    }
    const now = Date.now();
    const agent = this.agent(sender.key, limits, now);
    const throttle = longest([
      [agent.readings.waitFor(readings, now), "agent_readings"],
      [agent.bytes.waitFor(bytes, now), "agent_bytes"],
      // Still short after a lease: the tenant's bucket is empty until `blockedUntil`.
      [account.available >= needed ? 0 : Math.max(account.blockedUntil - now, 1), "tenant_readings"],
    ]);
    if (throttle.waitMs > 0) return throttle;
    agent.readings.take(readings, now);
    agent.bytes.take(bytes, now);
    account.available -= readings;
    return throttle;
  }

  close(): void {
    clearInterval(this.sweeper);
  }

  private agent(key: string, limits: TenantLimits, now: number): AgentBuckets {
    let agent = this.agents.get(key);
    if (agent) {
      agent.readings.configure(limits.agentReadingsPerSecond, limits.agentReadingsBurst, now);
      agent.bytes.configure(limits.agentBytesPerSecond, limits.agentBytesBurst, now);
    } else {
      agent = {
        readings: new TokenBucket(limits.agentReadingsPerSecond, limits.agentReadingsBurst, now),
        bytes: new TokenBucket(limits.agentBytesPerSecond, limits.agentBytesBurst, now),
        usedAt: now,
      };
      this.agents.set(key, agent);
    }
    agent.usedAt = now;
    return agent;
  }

  private account(tenantId: string, now: number): TenantAccount {
    const account = this.tenants.get(tenantId) ?? { available: 0, blockedUntil: 0, usedAt: now };
    this.tenants.set(tenantId, account);
    account.usedAt = now;
    return account;
  }

  /** Takes from the tenant's leased tokens, asking for the next lease before they run out. */
  private takeTenant(tenantId: string, readings: number, limits: TenantLimits, now: number): TenantAccount {
    const account = this.account(tenantId, now);
    account.available -= readings;
    if (account.available < leaseSize(limits) / 2 && !account.leasing && now >= account.blockedUntil) {
      void this.lease(tenantId, account, limits);
    }
    return account;
  }

  /** Asks the shared bucket for the debt plus a lease (and at least `atLeast`); one request per tenant at a time. */
  private lease(tenantId: string, account: TenantAccount, limits: TenantLimits, atLeast = 0): Promise<void> {
    const debt = Math.max(0, -account.available);
    const need = debt + Math.max(0, Math.min(atLeast, limits.tenantReadingsBurst) - Math.max(0, account.available));
    const want = Math.max(need, debt + leaseSize(limits));
    account.leasing = this.tokens
      .lease(tenantId, limits.tenantReadingsPerSecond, limits.tenantReadingsBurst, want, need)
      .then(
        ({ granted, waitMs }) => {
          account.available += granted;
          account.blockedUntil = granted < need ? Date.now() + waitMs : 0;
        },
        (error: Error) => {
          this.onLeaseError(error);
          account.available += want;
        },
      )
      .finally(() => {
        account.leasing = undefined;
      });
    return account.leasing;
  }

  /**
   * Leases until the tenant's debt is paid: waits out the empty bucket between tries. Each process
   * only resumes its senders once it holds the tokens, so brokers sharing a tenant cannot each read
   * ahead on their own estimate of the bucket.
   */
  private settle(tenantId: string, account: TenantAccount): Promise<number> {
    account.settling ??= (async () => {
      for (;;) {
        await (account.leasing ?? this.lease(tenantId, account, this.limits.current(tenantId)));
        if (account.available >= 0) return 0;
        const wait = Math.max(1, account.blockedUntil - Date.now());
        await new Promise((resolve) => setTimeout(resolve, wait));
      }
    })().finally(() => {
      account.settling = undefined;
    });
    return account.settling;
  }

  private forgetIdle(now: number): void {
    for (const [key, agent] of this.agents) {
      if (now - agent.usedAt > IDLE_MS && agent.readings.isFull(now) && agent.bytes.isFull(now))
        this.agents.delete(key);
    }
    for (const [tenantId, account] of this.tenants) {
      if (now - account.usedAt > IDLE_MS && !account.leasing) this.tenants.delete(tenantId);
    }
  }
}

function leaseSize(limits: TenantLimits): number {
  return Math.max(1, Math.min(limits.tenantReadingsBurst, Math.ceil(limits.tenantReadingsPerSecond * LEASE_SECONDS)));
}
