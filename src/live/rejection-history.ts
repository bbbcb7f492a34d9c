import type { Redis } from "ioredis";
import type { LiveRejection } from "./rejections.ts";

/** A refusal kept for the console, with the id that orders it (and pages by it). */
export type KeptRejection = LiveRejection & { id: string };

export interface RejectionPage {
  /** Newest first. */
  items: KeptRejection[];
  /** The id to pass as `before` for the next page; undefined on the last. */
  next?: string;
}

export interface RejectionHistoryLimits {
  /** Refusals kept per tenant, the newest. */
  maxPerTenant: number;
  /** How long one is kept. */
  windowMs: number;
}

/**
 * A tenant's recent refusals, so that an operator who opens the console after a device misbehaved
 * sees what happened: the last `maxPerTenant`, none older than `windowMs`.
 */
export interface RejectionHistory {
  record(tenantId: string, rejection: LiveRejection): Promise<void>;
  /** Newest first, `limit` at a time, of one agent if asked; `before`: the previous page's `next`. */
  list(tenantId: string, options: { limit: number; before?: string; agentId?: string }): Promise<RejectionPage>;
  /** The refusals kept now, counted by reason (each message stands for `count` readings). */
  countsByReason(tenantId: string, agentId?: string): Promise<{ reason: string; count: number }[]>;
}

/** Ids are `ms-seq`, as Redis stream ids: ordered by time, then by arrival within a millisecond. */
function idParts(id: string): [number, number] {
  const [ms, seq] = id.split("-");
  return [Number(ms), Number(seq ?? 0)];
}

export function isRejectionId(id: string): boolean {
  return /^\d{1,15}-\d{1,15}$/.test(id);
}

const olderThan = (id: string, other: string) => {
  const [a, b] = [idParts(id), idParts(other)];
  return a[0] < b[0] || (a[0] === b[0] && a[1] < b[1]);
};

/** Newest first, within the window, of the agent if asked, `limit` of them after `before`. */
function pageOf(newestFirst: KeptRejection[], limit: number, agentId: string | undefined): RejectionPage {
  const matching = agentId === undefined ? newestFirst : newestFirst.filter((r) => r.agent_id === agentId);
  const items = matching.slice(0, limit);
  return { items, ...(matching.length > limit && { next: items.at(-1)?.id }) };
}

export function countByReason(rejections: KeptRejection[]): { reason: string; count: number }[] {
  const counts = new Map<string, number>();
  for (const r of rejections) counts.set(r.reason, (counts.get(r.reason) ?? 0) + r.count);
  return [...counts].map(([reason, count]) => ({ reason, count })).sort((a, b) => b.count - a.count);
}

/** Embedded mode: in the process's memory (a restart forgets them). */
export class LocalRejectionHistory implements RejectionHistory {
  private readonly byTenant = new Map<string, KeptRejection[]>();
  private lastMs = 0;
  private seq = 0;

  constructor(
    private readonly limits: RejectionHistoryLimits,
    private readonly now: () => number = Date.now,
  ) {}

  private kept(tenantId: string): KeptRejection[] {
    const cutoff = this.now() - this.limits.windowMs;
    const kept = (this.byTenant.get(tenantId) ?? []).filter((r) => idParts(r.id)[0] >= cutoff);
    if (kept.length === 0) this.byTenant.delete(tenantId);
    else this.byTenant.set(tenantId, kept);
    return kept;
  }

  async record(tenantId: string, rejection: LiveRejection): Promise<void> {
    const ms = Math.max(this.now(), this.lastMs);
    this.seq = ms === this.lastMs ? this.seq + 1 : 0;
    this.lastMs = ms;
    const kept = this.kept(tenantId);
    kept.push({ ...rejection, id: `${ms}-${this.seq}` });
    if (kept.length > this.limits.maxPerTenant) kept.splice(0, kept.length - this.limits.maxPerTenant);
    this.byTenant.set(tenantId, kept);
  }

  async list(tenantId: string, options: { limit: number; before?: string; agentId?: string }): Promise<RejectionPage> {
    const newestFirst = [...this.kept(tenantId)].reverse();
    const after = options.before;
    return pageOf(
      after === undefined ? newestFirst : newestFirst.filter((r) => olderThan(r.id, after)),
      options.limit,
      options.agentId,
    );
  }

  async countsByReason(tenantId: string, agentId?: string): Promise<{ reason: string; count: number }[]> {
    return countByReason(this.kept(tenantId).filter((r) => agentId === undefined || r.agent_id === agentId));
  }
}

/**
 * Distributed mode: a Redis stream per tenant, trimmed exactly to the newest `maxPerTenant` and to
 * `windowMs` on every write (refusals come at most one per reason and agent per feedback interval),
 * and gone a window after the last; what passed the window since is left out when read. Any process's API reads what every
 * broker recorded.
 */
export class RedisRejectionHistory implements RejectionHistory {
  constructor(
    private readonly redis: Redis,
    private readonly prefix: string,
    private readonly limits: RejectionHistoryLimits,
  ) {}

  private key(tenantId: string): string {
    return `${this.prefix}:rejection-history:${tenantId}`;
  }

  private get cutoffId(): string {
    return `${Date.now() - this.limits.windowMs}-0`;
  }

  async record(tenantId: string, rejection: LiveRejection): Promise<void> {
    const key = this.key(tenantId);
    await this.redis
      .multi()
      .xadd(key, "MAXLEN", this.limits.maxPerTenant, "*", "r", JSON.stringify(rejection))
      .xtrim(key, "MINID", this.cutoffId)
      .pexpire(key, this.limits.windowMs)
      .exec();
  }

  /** The entries newest first from `end` (inclusive, or `(id` exclusive), at most `count`, within the window. */
  private async newestFirst(tenantId: string, end: string, count?: number): Promise<KeptRejection[]> {
    const key = this.key(tenantId);
    const cutoff = this.cutoffId;
    const entries = await (count === undefined
      ? this.redis.xrevrange(key, end, cutoff)
      : this.redis.xrevrange(key, end, cutoff, "COUNT", count));
    return entries.map(([id, fields]) => ({ ...(JSON.parse(fields[1] as string) as LiveRejection), id }));
  }

  async list(tenantId: string, options: { limit: number; before?: string; agentId?: string }): Promise<RejectionPage> {
    const end = options.before === undefined ? "+" : `(${options.before}`;
    // One agent's are found among the tenant's: all of them are read (at most maxPerTenant).
    const count = options.agentId === undefined ? options.limit + 1 : undefined;
    return pageOf(await this.newestFirst(tenantId, end, count), options.limit, options.agentId);
  }

  async countsByReason(tenantId: string, agentId?: string): Promise<{ reason: string; count: number }[]> {
    const all = await this.newestFirst(tenantId, "+");
    return countByReason(all.filter((r) => agentId === undefined || r.agent_id === agentId));
  }
}
