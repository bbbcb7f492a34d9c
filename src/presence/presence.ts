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
// broker stopped renewing them) are dropped before counting. Beside it, a hash per tenant: client id
// -> its latest member, so a client that connects again (its broker died, or it moved) replaces its
// previous connection in the count at once instead of a lease later: after a broker dies, its whole
// fleet reconnects elsewhere while the dead broker's members still hold their leases.
const NOW = `local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)`;
// Expired members leave the count, and their client ids the hash (which so holds no more entries
// than there are connections counted, whatever brokers die).
const DROP_EXPIRED = `for _, gone in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now)) do
  local client = string.match(gone, '^[^|]*|[^|]*|(.*)$')
  if client and redis.call('HGET', KEYS[2], client) == gone then redis.call('HDEL', KEYS[2], client) end
end
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)`;
// KEYS: members, clients. ARGV: member, max, lease ms, client id.
const ADMIT_SCRIPT = `${NOW}
${DROP_EXPIRED}
local previous = redis.call('HGET', KEYS[2], ARGV[4])
if previous == ARGV[1] or not redis.call('ZSCORE', KEYS[1], previous or '') then previous = false end
if not redis.call('ZSCORE', KEYS[1], ARGV[1]) then
  local count = redis.call('ZCARD', KEYS[1]) - (previous and 1 or 0)
  if count >= tonumber(ARGV[2]) then return 0 end
end
if previous then redis.call('ZREM', KEYS[1], previous) end
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[3]), ARGV[1])
redis.call('HSET', KEYS[2], ARGV[4], ARGV[1])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
redis.call('PEXPIRE', KEYS[2], ARGV[3])
return 1`;
// KEYS: members, clients. ARGV: member, client id.
const RELEASE_SCRIPT = `redis.call('ZREM', KEYS[1], ARGV[1])
if redis.call('HGET', KEYS[2], ARGV[2]) == ARGV[1] then redis.call('HDEL', KEYS[2], ARGV[2]) end
return 1`;
// Adds as well as renews: a connection whose lease lapsed while Redis did not answer is still open,
// so it counts (and shows) again, even past the quota it was admitted under.
// KEYS: members, clients. ARGV: lease ms, then member and client id pairs.
const RENEW_SCRIPT = `${NOW}
for i = 2, #ARGV, 2 do
  redis.call('ZADD', KEYS[1], now + tonumber(ARGV[1]), ARGV[i])
  redis.call('HSETNX', KEYS[2], ARGV[i + 1], ARGV[i])
end
redis.call('PEXPIRE', KEYS[1], ARGV[1])
redis.call('PEXPIRE', KEYS[2], ARGV[1])
return 1`;
/** Connections renewed by one script call. */
const RENEW_CHUNK = 1000;
const MEMBERS_SCRIPT = `${NOW}
return redis.call('ZRANGEBYSCORE', KEYS[1], now, '+inf')`;

interface PresenceCommands {
  edgeIngestAdmit(
    key: string,
    clients: string,
    member: string,
    max: number,
    leaseMs: number,
    clientId: string,
  ): Promise<number>;
  edgeIngestRelease(key: string, clients: string, member: string, clientId: string): Promise<number>;
  edgeIngestRenew(key: string, clients: string, leaseMs: number, ...membersAndClientIds: string[]): Promise<number>;
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
    redis.defineCommand("edgeIngestAdmit", { numberOfKeys: 2, lua: ADMIT_SCRIPT });
    redis.defineCommand("edgeIngestRelease", { numberOfKeys: 2, lua: RELEASE_SCRIPT });
    redis.defineCommand("edgeIngestRenew", { numberOfKeys: 2, lua: RENEW_SCRIPT });
    redis.defineCommand("edgeIngestMembers", { numberOfKeys: 1, lua: MEMBERS_SCRIPT });
    this.redis = redis as Redis & PresenceCommands;
    this.renewer = setInterval(() => this.renew().catch(onRenewError), leaseMs / 3).unref();
  }

  private key(tenantId: string): string {
    return `${this.prefix}:presence:${tenantId}`;
  }

  private clientsKey(tenantId: string): string {
    return `${this.prefix}:presence-clients:${tenantId}`;
  }

  async admit(tenantId: string, member: string, max: number): Promise<boolean> {
    const { clientId } = parseMember(member);
    const admitted =
      (await this.redis.edgeIngestAdmit(
        this.key(tenantId),
        this.clientsKey(tenantId),
        member,
        max,
        this.leaseMs,
        clientId,
      )) === 1;
    if (admitted) this.own.set(tenantId, (this.own.get(tenantId) ?? new Set()).add(member));
    return admitted;
  }

  async release(tenantId: string, member: string): Promise<void> {
    const members = this.own.get(tenantId);
    members?.delete(member);
    if (members?.size === 0) this.own.delete(tenantId);
    await this.redis.edgeIngestRelease(
      this.key(tenantId),
      this.clientsKey(tenantId),
      member,
      parseMember(member).clientId,
    );
  }

  members(tenantId: string): Promise<string[]> {
    return this.redis.edgeIngestMembers(this.key(tenantId));
  }

  /**
   * In calls of RENEW_CHUNK connections: one script for a tenant's 100,000 would hold Redis (and every
   * broker's acknowledgements behind it) for the whole call.
   */
  private async renew(): Promise<void> {
    const calls: Promise<number>[] = [];
    for (const [tenantId, members] of this.own) {
      const all = [...members];
      for (let start = 0; start < all.length; start += RENEW_CHUNK) {
        calls.push(
          this.redis.edgeIngestRenew(
            this.key(tenantId),
            this.clientsKey(tenantId),
            this.leaseMs,
            ...all.slice(start, start + RENEW_CHUNK).flatMap((member) => [member, parseMember(member).clientId]),
          ),
        );
      }
    }
    await Promise.all(calls);
  }

  close(): void {
    clearInterval(this.renewer);
  }
}
