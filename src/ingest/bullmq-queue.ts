import { Queue } from "bullmq";
import { Redis } from "ioredis";
import type { Logger } from "pino";
import { QueueUnavailableError, type SubmissionQueue } from "./queue.ts";
import { type MetricSubmission, SUBMISSION_JOB_NAME } from "./submission.ts";

export const INGEST_QUEUE_NAME = "ingest";

export interface BullmqQueueOptions {
  redisUrl: string;
  prefix: string;
  attempts: number;
  backoffMs: number;
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

  private constructor(private readonly options: BullmqQueueOptions) {
    this.connection = new Redis(options.redisUrl, { enableOfflineQueue: false, maxRetriesPerRequest: 1 });
    this.queue = new Queue(INGEST_QUEUE_NAME, { connection: this.connection, prefix: options.prefix });
    // Submit failures reach the producer; these are the reconnect attempts behind them.
    this.queue.on("error", (error: Error) => options.logger.warn({ err: error }, "queue Redis connection error"));
  }

  static async open(options: BullmqQueueOptions): Promise<BullmqSubmissionQueue> {
    const queue = new BullmqSubmissionQueue(options);
    await queue.queue.waitUntilReady();
    return queue;
  }

  async submit(submission: MetricSubmission): Promise<void> {
    try {
      await this.queue.add(SUBMISSION_JOB_NAME, submission, {
        jobId: submission.id,
        attempts: this.options.attempts,
        backoff: { type: "exponential", delay: this.options.backoffMs },
        removeOnComplete: true,
        removeOnFail: false,
      });
    } catch (error) {
      throw new QueueUnavailableError(`the queue is unreachable: ${(error as Error).message}`);
    }
  }

  async depth(): Promise<number> {
    const counts = await this.queue.getJobCounts("waiting", "delayed", "active", "prioritized");
    return Object.values(counts).reduce((sum, n) => sum + n, 0);
  }

  async ping(): Promise<void> {
    await this.connection.ping();
  }

  async close(): Promise<void> {
    await this.queue.close();
    this.connection.disconnect();
  }
}
