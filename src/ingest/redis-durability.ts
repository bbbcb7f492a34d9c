import type { Redis } from "ioredis";
import type { Logger } from "pino";
import type { Telemetry } from "../telemetry/prometheus.ts";

/** `aof`: the queue's Redis must persist every write; `none`: its operator accepts losing the queue with Redis. */
export type RedisPersistence = "aof" | "none";

export interface DurabilityReport {
  /** What makes acknowledged readings losable, each saying what to set. */
  problems: string[];
  /** Losses the operator accepted (REDIS_PERSISTENCE=none), said at every start. */
  warnings: string[];
  checks: { persistence: boolean; eviction: boolean };
}

function field(info: string, name: string): string | undefined {
  return new RegExp(`^${name}:(.*)$`, "m").exec(info)?.[1]?.trim();
}

/**
 * Whether a Redis can hold acknowledged readings, from its `INFO persistence` and `INFO memory`: an
 * acknowledgement means Redis has the job, which is only durable if Redis writes it to its
 * append-only file, and only kept if Redis never evicts keys (BullMQ's own requirement).
 */
export function durabilityReport(info: string, persistence: RedisPersistence): DurabilityReport {
  const problems: string[] = [];
  const warnings: string[] = [];
  const aof = field(info, "aof_enabled") === "1";
  if (!aof && persistence === "aof") {
    problems.push(
      "Redis has no append-only file (appendonly no): acknowledged readings waiting in the queue would be lost with Redis. Set `appendonly yes` (redis.conf, or CONFIG SET appendonly yes), or set REDIS_PERSISTENCE=none to accept that loss",
    );
  }
  if (!aof && persistence === "none") {
    warnings.push(
      "REDIS_PERSISTENCE=none: Redis keeps no append-only file, so acknowledged readings still in the queue are lost if Redis stops",
    );
  }
  const policy = field(info, "maxmemory_policy");
  const noEviction = policy === "noeviction";
  if (!noEviction) {
    problems.push(
      `Redis maxmemory-policy is ${policy ?? "unknown"}: Redis may evict queued submissions. Set \`maxmemory-policy noeviction\` (BullMQ's requirement)`,
    );
  }
  return { problems, warnings, checks: { persistence: aof || persistence === "none", eviction: noEviction } };
}

/**
 * Checks the queue's Redis at start-up (the caller refuses to start on a problem) and then every
 * `intervalMs`, so a Redis restarted without its AOF, or reconfigured, shows in /readyz and /metrics.
 */
export class RedisDurability {
  private last: DurabilityReport | undefined;
  private timer: NodeJS.Timeout | undefined;

  constructor(
    private readonly redis: Redis,
    private readonly persistence: RedisPersistence,
    private readonly telemetry: Telemetry,
    private readonly logger: Logger,
  ) {}

  async check(): Promise<DurabilityReport> {
    const info = `${await this.redis.info("persistence")}\n${await this.redis.info("memory")}`;
    const report = durabilityReport(info, this.persistence);
    for (const [check, ok] of Object.entries(report.checks)) this.telemetry.redisCheck.set({ check }, ok ? 1 : 0);
    const before = this.last?.problems.join("\n");
    if (this.last && before !== report.problems.join("\n")) {
      if (report.problems.length > 0)
        this.logger.error({ problems: report.problems }, "the queue's Redis is not durable");
      else this.logger.info("the queue's Redis is durable again");
    }
    this.last = report;
    return report;
  }

  /** Checks every `intervalMs` from now on; a check that cannot run leaves the last result. */
  watch(intervalMs: number): void {
    this.timer = setInterval(() => void this.check().catch(() => undefined), intervalMs).unref();
  }

  /** For /readyz: throws while the last check found a problem. */
  readiness = async (): Promise<void> => {
    if (this.last && this.last.problems.length > 0) throw new Error(this.last.problems.join("; "));
  };

  close(): void {
    clearInterval(this.timer);
  }
}
