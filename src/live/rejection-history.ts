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
  /** Every refusal of the tenant kept now (at most `maxPerTenant`), newest first. */
  recent(tenantId: string): Promise<KeptRejection[]>;
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

/** One page of `newestFirst`: `limit` of them (one agent's, if asked) older than `before`. */
export function pageOf(
  newestFirst: KeptRejection[],
  options: { limit: number; before?: string; agentId?: string },
): RejectionPage {
  const { limit, before, agentId } = options;
  const matching = newestFirst.filter(
    (r) => (agentId === undefined || r.agent_id === agentId) && (before === undefined || olderThan(r.id, before)),
  );
  const items = matching.slice(0, limit);
  return { items, ...(matching.length > limit && { next: items.at(-1)?.id }) };
}

/** The readings refused, by reason, most first (each refusal stands for `count` of them). */
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

  /** The tenant's refusals within the window, oldest first (older ones are let go here). */
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

  async recent(tenantId: string): Promise<KeptRejection[]> {
    return [...this.kept(tenantId)].reverse();
  }
}

/**
 * Distributed mode: a Redis stream per tenant, trimmed exactly to the newest `maxPerTenant` and to
 * `windowMs` on every write (refusals come at most one per reason and agent per feedback interval),
 * and gone a window after the last; what passed the window since is left out when read. Any
 * process's API reads what every broker recorded.
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

  async recent(tenantId: string): Promise<KeptRejection[]> {
    const entries = await this.redis.xrevrange(this.key(tenantId), "+", this.cutoffId);
    return entries.map(([id, fields]) => ({ ...(JSON.parse(fields[1] as string) as LiveRejection), id }));
  }
}
