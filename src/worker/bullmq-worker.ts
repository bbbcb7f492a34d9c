import { type Job, Worker } from "bullmq";
import { Redis } from "ioredis";
import type { Logger } from "pino";
import { INGEST_QUEUE_NAME } from "../ingest/bullmq-queue.ts";
import type { SubmissionProcessor } from "../ingest/queue.ts";
import type { MetricSubmission } from "../ingest/submission.ts";

/** Drains the `ingest` queue; BullMQ retries failed attempts with backoff and keeps final failures. */
export async function startBullmqWorker(options: {
  redisUrl: string;
  prefix: string;
  concurrency: number;
  process: SubmissionProcessor;
  logger: Logger;
}): Promise<{ close(): Promise<void> }> {
  const connection = new Redis(options.redisUrl, { maxRetriesPerRequest: null });
  const worker = new Worker<MetricSubmission>(
    INGEST_QUEUE_NAME,
    (job: Job<MetricSubmission>) => options.process(job.data),
    { connection, prefix: options.prefix, concurrency: options.concurrency },
  );
  worker.on("failed", (job, error) => {
    const final = job !== undefined && job.attemptsMade >= (job.opts.attempts ?? 1);
    options.logger[final ? "error" : "warn"](
      { err: error, jobId: job?.id, attempt: job?.attemptsMade, final },
      final ? "submission job failed for good; it stays in the failed set" : "submission job attempt failed; retrying",
    );
  });
  worker.on("error", (error) => options.logger.error({ err: error }, "worker error"));
  await worker.waitUntilReady();
  return {
    // Waits for the jobs in progress to finish before it resolves.
    close: async () => {
      await worker.close();
      connection.disconnect();
    },
  };
}
