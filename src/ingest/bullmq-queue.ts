import { Job, Queue } from "bullmq";
import type { Redis } from "ioredis";
import type { Logger } from "pino";
import { QueueUnavailableError } from "../errors.ts";
import { rateLimitedLog } from "../logger.ts";
import type { RedisConnector } from "../redis/connection.ts";
import { ReplicaShortfallError, ReplicaWait } from "../redis/replicas.ts";
import type { FailedSubmission, FailedSummary, SubmissionQueue } from "./queue.ts";
import { type MetricSubmission, SUBMISSION_JOB_NAME } from "./submission.ts";

export const INGEST_QUEUE_NAME = "ingest";
/** ioredis's error for a command with no answer within `commandTimeout`. */
const isCommandTimeout = (error: unknown) => (error as Error)?.message === "Command timed out";

/** How long a readiness check waits for replicas that fell short to confirm (under /readyz's 800 ms). */
const REPLICA_RECHECK_MS = 300;
/** How many of the newest failed submissions their reasons are counted over. */
const REASONS_SAMPLE = 1000;

export interface BullmqQueueOptions {
  connect: RedisConnector;
  prefix: string;
  attempts: number;
  backoffMs: number;
  /** A write Redis has not answered in this long is written again (the acknowledgement waits). */
  commandTimeoutMs?: number;
  /** Replicas that must confirm a job before `submit` resolves (REDIS_MIN_REPLICAS); 0 or unset: none. */
  minReplicas?: number;
  replicaTimeoutMs?: number;
  logger: Logger;
}

/**
 * Distributed mode: `add` resolves once Redis has executed the write. The connection has no
 * offline queue, so while Redis is unreachable a submit fails at once instead of waiting in memory.
 */
export class BullmqSubmissionQueue implements SubmissionQueue {
  readonly backend = "bullmq";
  private readonly connection: Redis;
  private readonly queue: Queue;
  private readonly replicas: ReplicaWait | undefined;
  private closing = false;
  /** Submissions being written again after a write timed out. */
  private held = 0;

  private constructor(private readonly options: BullmqQueueOptions) {
    this.connection = options.connect("queue", {
      enableOfflineQueue: false,
      maxRetriesPerRequest: 1,
      commandTimeout: options.commandTimeoutMs,
    });
    this.queue = new Queue(INGEST_QUEUE_NAME, { connection: this.connection, prefix: options.prefix });
    if (options.minReplicas) {
      this.replicas = new ReplicaWait(this.connection, options.minReplicas, options.replicaTimeoutMs ?? 1000);
    }
    // Submit failures reach the producer; these are the reconnect attempts behind them.
    const logError = rateLimitedLog(options.logger, 5, 60_000);
    this.queue.on("error", (error: Error) => logError({ reason: error.message }, "queue Redis connection error"));
  }

  static async open(options: BullmqQueueOptions): Promise<BullmqSubmissionQueue> {
    const queue = new BullmqSubmissionQueue(options);
    await queue.queue.waitUntilReady();
    return queue;
  }

  /**
   * Resolves once Redis has the job. A write Redis has not answered within the command timeout (a
   * Redis that hangs) is written again with the same job id until it answers: BullMQ adds a job id
   * once, so a write executed late is not a second job, and meanwhile the acknowledgement is held
   * (and logged as held) rather than refused. A Redis that is unreachable fails at once. With
   * REDIS_MIN_REPLICAS it resolves only once that many replicas have the job too, and fails on a
   * shortfall (the job stays; a resend is stored once by its dedupe ids).
   */
  async submit(submission: MetricSubmission): Promise<void> {
    const writtenAt = this.replicas?.epoch ?? 0;
    let held = false;
    try {
      for (;;) {
        try {
          await this.queue.add(SUBMISSION_JOB_NAME, submission, {
            jobId: submission.id,
            attempts: this.options.attempts,
            backoff: { type: "exponential", delay: this.options.backoffMs },
            removeOnComplete: true,
            removeOnFail: false,
          });
          await this.replicas?.confirm(writtenAt);
          return;
        } catch (error) {
          if (error instanceof ReplicaShortfallError) throw error;
          if (this.closing || !isCommandTimeout(error)) {
            throw new QueueUnavailableError(`the queue is unreachable: ${(error as Error).message}`);
          }
          if (!held) this.held++;
          held = true;
        }
      }
    } finally {
      if (held) this.held--;
    }
  }

  /**
   * While a write waits on a Redis that does not answer, a new one would only wait too: HTTP
   * clients are told to come back instead of each holding a request (MQTT publishers are bounded
   * by MQTT_MAX_PENDING_MESSAGES).
   */
  get unavailable(): string | undefined {
    return this.held > 0 ? "the queue's Redis has not answered a write within REDIS_COMMAND_TIMEOUT_MS" : undefined;
  }

  async depth(): Promise<number> {
    const counts = await this.queue.getJobCounts("waiting", "delayed", "active", "prioritized");
    return Object.values(counts).reduce((sum, n) => sum + n, 0);
  }

  /** While the replicas fall short, says so, after asking them again briefly (within /readyz's time). */
  async ping(): Promise<void> {
    const shortfall = await this.replicas?.recheck(REPLICA_RECHECK_MS);
    if (shortfall) throw new QueueUnavailableError(`nothing can be acknowledged: ${shortfall}`);
    await this.connection.ping();
  }

  async failedJobs(limit: number): Promise<FailedSummary> {
    const [count, newest, [oldest]] = await Promise.all([
      this.queue.getFailedCount(),
      this.queue.getJobs(["failed"], 0, REASONS_SAMPLE - 1, false),
      this.queue.getJobs(["failed"], 0, 0, true),
    ]);
    const reasons = new Map<string, number>();
    for (const job of newest) reasons.set(job.failedReason, (reasons.get(job.failedReason) ?? 0) + 1);
    return {
      count,
      ...(oldest?.finishedOn && { oldestFailedAt: oldest.finishedOn }),
      reasons: [...reasons].map(([reason, n]) => ({ reason, count: n })).sort((a, b) => b.count - a.count),
      jobs: newest.slice(0, limit).map(
        (job): FailedSubmission => ({
          id: job.id as string,
          tenantId: (job.data as MetricSubmission).tenantId,
          readings: (job.data as MetricSubmission).metrics.length,
          reason: job.failedReason,
          failedAt: job.finishedOn ?? job.timestamp,
          attempts: job.attemptsMade,
        }),
      ),
    };
  }

  async retryFailed(ids: string[] | "all"): Promise<number> {
    if (ids === "all") {
      const before = await this.queue.getFailedCount();
      await this.queue.retryJobs({ state: "failed" });
      return before - (await this.queue.getFailedCount());
    }
    let retried = 0;
    for (const id of ids) {
      const job = await Job.fromId(this.queue, id);
      if (job && (await job.isFailed())) {
        await job.retry("failed");
        retried++;
      }
    }
    return retried;
  }

  async close(): Promise<void> {
    this.closing = true;
    await this.queue.close();
    this.connection.disconnect();
  }
}
