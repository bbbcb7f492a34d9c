import { NotFoundError } from "../errors.ts";
import type { PubSub } from "../pubsub.ts";
import type { Database } from "../store/database.ts";
import { findTenantLimits } from "../store/lookups.ts";
import { effectiveLimits, LIMITS, type LimitOverrides, type TenantLimits } from "./tenant-limits.ts";

/** Where a process says a tenant's limits changed, so every process reads them again. */
const CHANGED_CHANNEL = "tenant-limits-changed";

/** Where the limiter reads a tenant's limits. */
export interface LimitsSource {
  readonly defaults: TenantLimits;
  /** Without waiting: the best known value now. */
  current(tenantId: string): TenantLimits;
  get(tenantId: string): Promise<TenantLimits>;
}

interface Cached {
  limits: TenantLimits;
  expires: number;
  loading?: Promise<TenantLimits>;
}

/**
 * Each tenant's limits: the configured defaults under its overrides (table `tenant_limits`).
 * Read on the publish path without waiting: the cached value, else the defaults while it loads;
 * a change made through any process reaches every process at once (Pub/Sub), and the cache expires
 * after `ttlMs` should that announcement be lost.
 */
export class TenantLimitsStore implements LimitsSource {
  private readonly cache = new Map<string, Cached>();

  private constructor(
    private readonly db: Pick<Database, "prisma" | "sql">,
    readonly defaults: TenantLimits,
    private readonly ttlMs: number,
    private readonly pubsub: PubSub,
  ) {}

  /** Reads through `db.sql` (src/store/lookups.ts), writes through Prisma. */
  static async open(db: Pick<Database, "prisma" | "sql">, defaults: TenantLimits, ttlMs: number, pubsub: PubSub) {
    const store = new TenantLimitsStore(db, defaults, ttlMs, pubsub);
    await pubsub.subscribe(CHANGED_CHANNEL, (tenantId) => store.cache.delete(tenantId));
    return store;
  }

  /** The tenant's limits now, without waiting: cached, or the defaults while they load. */
  current(tenantId: string): TenantLimits {
    const cached = this.cache.get(tenantId);
    if (!cached || cached.expires <= Date.now()) void this.get(tenantId).catch(() => undefined);
    return cached?.limits ?? this.defaults;
  }

  /** The tenant's limits, loaded if they are not cached. */
  get(tenantId: string): Promise<TenantLimits> {
    const cached = this.cache.get(tenantId);
    if (cached && cached.expires > Date.now()) return Promise.resolve(cached.limits);
    if (cached?.loading) return cached.loading;
    const loading = this.overrides(tenantId).then((overrides) => {
      const limits = effectiveLimits(this.defaults, overrides);
      this.cache.set(tenantId, { limits, expires: Date.now() + this.ttlMs });
      return limits;
    });
    this.cache.set(tenantId, { limits: cached?.limits ?? this.defaults, expires: 0, loading });
    // A failed load is retried by the next call; meanwhile the last known limits hold.
    loading.catch(() => this.cache.get(tenantId)?.loading === loading && this.cache.delete(tenantId));
    return loading;
  }

  /** The tenant's overrides as stored (an absent row: none). */
  async overrides(tenantId: string): Promise<LimitOverrides> {
    const row = await findTenantLimits(
      this.db.sql,
      tenantId,
      LIMITS.map(({ api }) => api),
    );
    return Object.fromEntries(LIMITS.map(({ key, api }) => [key, row?.[api] ?? null]));
  }

  /** Sets some overrides (null: back to the default) and tells every process. Returns all overrides. */
  async set(tenantId: string, changes: LimitOverrides): Promise<LimitOverrides> {
    const prisma = await this.db.prisma();
    if ((await prisma.tenant.count({ where: { id: tenantId } })) === 0) {
      throw new NotFoundError(`tenant ${tenantId} does not exist`);
    }
    await prisma.tenantLimit.upsert({
      where: { tenantId },
      create: { tenantId, ...changes },
      update: changes,
    });
    this.cache.delete(tenantId);
    await this.pubsub.publish(CHANGED_CHANNEL, tenantId);
    return this.overrides(tenantId);
  }
}
