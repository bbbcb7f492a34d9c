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
  checks: { persistence: boolean; eviction: boolean; replicas?: boolean };
}

/** With REDIS_MIN_REPLICAS: how many replicas must confirm a job, and how to reach one to check it. */
export interface ReplicaCheck {
  min: number;
  connect(address: { host: string; port: number }): Redis;
}

/** The replicas a primary reports online, from its `INFO replication` (`slave0:ip=…,port=…,state=online,…`). */
export function onlineReplicas(info: string): { host: string; port: number }[] {
  return [...info.matchAll(/^slave\d+:(.*)$/gm)].flatMap(([, line]) => {
    const fields = new Map((line ?? "").split(",").map((pair) => pair.trim().split("=") as [string, string]));
    const port = Number(fields.get("port"));
    const host = fields.get("ip");
    return host && port > 0 && fields.get("state") === "online" ? [{ host, port }] : [];
  });
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
 * With REDIS_MIN_REPLICAS each online replica is checked the same way: a job acknowledged because
 * a replica has it is only as safe as that replica. Too few durable replicas answering is not a
 * problem of durability (WAIT holds the acknowledgements meanwhile, and says so in /readyz), but is
 * logged and shown as the `replicas` check.
 */
export class RedisDurability {
  private last: DurabilityReport | undefined;
  private timer: NodeJS.Timeout | undefined;

  constructor(
    private readonly redis: Redis,
    private readonly persistence: RedisPersistence,
    private readonly telemetry: Telemetry,
    private readonly logger: Logger,
    private readonly replicas?: ReplicaCheck,
  ) {}

  private static async durabilityInfo(redis: Redis): Promise<string> {
    return `${await redis.info("persistence")}\n${await redis.info("memory")}`;
  }

  async check(): Promise<DurabilityReport> {
    const report = durabilityReport(await RedisDurability.durabilityInfo(this.redis), this.persistence);
    if (this.replicas) await this.checkReplicas(this.replicas, report);
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

  private async checkReplicas(replicas: ReplicaCheck, report: DurabilityReport): Promise<void> {
    const online = onlineReplicas(await this.redis.info("replication"));
    /** Replicas that answered and keep what they have; one that does not answer counts for nothing. */
    let durable = 0;
    const unchecked: string[] = [];
    for (const address of online) {
      const replica = replicas.connect(address);
      replica.on("error", () => undefined);
      const name = `replica ${address.host}:${address.port}`;
      try {
        const { problems, checks } = durabilityReport(await RedisDurability.durabilityInfo(replica), this.persistence);
        report.problems.push(...problems.map((problem) => `${name}: ${problem}`));
        report.checks.persistence &&= checks.persistence;
        report.checks.eviction &&= checks.eviction;
        if (problems.length === 0) durable++;
      } catch (error) {
        unchecked.push(`${name} (${(error as Error).message})`);
      } finally {
        replica.disconnect();
      }
    }
    const enough = durable >= replicas.min;
    if (enough !== (this.last?.checks.replicas ?? true)) {
      if (enough) this.logger.info({ replicas: durable }, "the queue's Redis has its replicas again");
      else
        this.logger.warn(
          { replicas: durable, required: replicas.min, unchecked },
          "the queue's Redis has fewer durable replicas answering than REDIS_MIN_REPLICAS: acknowledgements wait for them (a replica the primary reports must be reachable at that address: replica-announce-ip)",
        );
    }
    report.checks.replicas = enough;
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
