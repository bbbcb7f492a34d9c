import type { Redis } from "ioredis";

/**
 * Which MQTT connections each tenant has open, across every broker: what the per-tenant connection
 * quota counts, and what says whether an agent is connected. A member names one connection:
 * `{broker id}|{serial}|{namespaced client id}`.
 */
export interface Presence {
  /** Registers a connection unless the tenant already has `max`; false: over the quota. */
  admit(tenantId: string, member: string, max: number): Promise<boolean>;
  release(tenantId: string, member: string): Promise<void>;
  /** The tenant's connections now. */
  members(tenantId: string): Promise<string[]>;
  close(): void;
}

export function presenceMember(brokerId: string, serial: number, clientId: string): string {
  return `${brokerId}|${serial}|${clientId}`;
}

/** The broker and the namespaced client id of a member. */
export function parseMember(member: string): { brokerId: string; clientId: string } {
  const [brokerId = "", , ...clientId] = member.split("|");
  return { brokerId, clientId: clientId.join("|") };
}

/** Embedded mode: one broker, so its own connections are all there are. */
export class LocalPresence implements Presence {
  private readonly tenants = new Map<string, Set<string>>();

  async admit(tenantId: string, member: string, max: number): Promise<boolean> {
    const members = this.tenants.get(tenantId) ?? new Set<string>();
    if (members.size >= max && !members.has(member)) return false;
    members.add(member);
    this.tenants.set(tenantId, members);
    return true;
  }

  async release(tenantId: string, member: string): Promise<void> {
    const members = this.tenants.get(tenantId);
    members?.delete(member);
    if (members?.size === 0) this.tenants.delete(tenantId);
  }

  async members(tenantId: string): Promise<string[]> {
    return [...(this.tenants.get(tenantId) ?? [])];
  }

  close(): void {}
}

// A sorted set per tenant: member -> when its lease ends, on Redis's clock. Expired members (their
// broker stopped renewing them) are dropped before counting.
const NOW = `local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)`;
const ADMIT_SCRIPT = `${NOW}
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if not redis.call('ZSCORE', KEYS[1], ARGV[1]) and redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[2]) then return 0 end
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[3]), ARGV[1])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return 1`;
// Adds as well as renews: a connection whose lease lapsed while Redis did not answer is still open,
// so it counts (and shows) again, even past the quota it was admitted under.
const RENEW_SCRIPT = `${NOW}
for i = 2, #ARGV do redis.call('ZADD', KEYS[1], now + tonumber(ARGV[1]), ARGV[i]) end
redis.call('PEXPIRE', KEYS[1], ARGV[1])
return 1`;
const MEMBERS_SCRIPT = `${NOW}
return redis.call('ZRANGEBYSCORE', KEYS[1], now, '+inf')`;

interface PresenceCommands {
  edgeIngestAdmit(key: string, member: string, max: number, leaseMs: number): Promise<number>;
  edgeIngestRenew(key: string, leaseMs: number, ...members: string[]): Promise<number>;
  edgeIngestMembers(key: string): Promise<string[]>;
}

/**
 * Distributed mode: the registry lives in Redis, shared by every broker. Each broker re-asserts
 * its own connections every third of `leaseMs`, so those of a broker that died expire within a
 * lease, and those of a live broker are back within a third of one after Redis stopped answering.
 */
export class RedisPresence implements Presence {
  private readonly redis: Redis & PresenceCommands;
  /** This broker's registered connections, by tenant, renewed on a timer. */
  private readonly own = new Map<string, Set<string>>();
  private readonly renewer: NodeJS.Timeout;

  constructor(
    redis: Redis,
    private readonly prefix: string,
    private readonly leaseMs: number,
    onRenewError: (error: Error) => void,
  ) {
    redis.defineCommand("edgeIngestAdmit", { numberOfKeys: 1, lua: ADMIT_SCRIPT });
    redis.defineCommand("edgeIngestRenew", { numberOfKeys: 1, lua: RENEW_SCRIPT });
    redis.defineCommand("edgeIngestMembers", { numberOfKeys: 1, lua: MEMBERS_SCRIPT });
    this.redis = redis as Redis & PresenceCommands;
    this.renewer = setInterval(() => this.renew().catch(onRenewError), leaseMs / 3).unref();
  }

  private key(tenantId: string): string {
    return `${this.prefix}:presence:${tenantId}`;
  }

  async admit(tenantId: string, member: string, max: number): Promise<boolean> {
    const admitted = (await this.redis.edgeIngestAdmit(this.key(tenantId), member, max, this.leaseMs)) === 1;
    if (admitted) this.own.set(tenantId, (this.own.get(tenantId) ?? new Set()).add(member));
    return admitted;
  }

  async release(tenantId: string, member: string): Promise<void> {
    const members = this.own.get(tenantId);
    members?.delete(member);
    if (members?.size === 0) this.own.delete(tenantId);
    await this.redis.zrem(this.key(tenantId), member);
  }

  members(tenantId: string): Promise<string[]> {
    return this.redis.edgeIngestMembers(this.key(tenantId));
  }

  private async renew(): Promise<void> {
    await Promise.all(
      [...this.own].map(([tenantId, members]) =>
        this.redis.edgeIngestRenew(this.key(tenantId), this.leaseMs, ...members),
      ),
    );
  }

  close(): void {
    clearInterval(this.renewer);
  }
}
