import { DelayedError, type Job, Worker } from "bullmq";
import type { Logger } from "pino";
import { INGEST_QUEUE_NAME } from "../ingest/bullmq-queue.ts";
import type { SubmissionProcessor } from "../ingest/queue.ts";
import type { MetricSubmission } from "../ingest/submission.ts";
import { rateLimitedLog } from "../logger.ts";
import type { RedisConnector } from "../redis/connection.ts";
import { isTransientDatabaseError } from "../store/database-errors.ts";
import type { Telemetry } from "../telemetry/prometheus.ts";
import type { StallWatch } from "../telemetry/stall-watch.ts";
import { DatabaseWait, DatabaseWaitClosed } from "./database-wait.ts";

export interface WorkerOptions {
  connect: RedisConnector;
  prefix: string;
  concurrency: number;
  process: SubmissionProcessor;
  /** Answers when the database does (`SELECT 1`). */
  probeDatabase: () => Promise<void>;
  /** First and longest wait between probes while the database is down. */
  backoffMs: number;
  maxBackoffMs: number;
  /** BullMQ's job lock: a killed worker's jobs are handed on once it expires and a stalled check runs. */
  lockMs: number;
  stalledCheckMs: number;
  maxStalled: number;
  /** Says when jobs wait on the database to be stored. */
  storage: StallWatch;
  telemetry: Telemetry;
  logger: Logger;
}

/**
 * Drains the `ingest` queue. A transient database error (the server down or restarting) never uses
 * up a job's attempts: the worker's jobs wait for the database together, holding its concurrency,
 * while the brokers' depth gate holds their acknowledgements. Any other error is an attempt; after
 * the last one the job stays in the failed set, submission intact, for `edge-ingest jobs retry`.
 */
export async function startBullmqWorker(options: WorkerOptions): Promise<{ close(): Promise<void> }> {
  const { logger, telemetry } = options;
  const connection = options.connect("worker", { maxRetriesPerRequest: null });
  const databaseWait = new DatabaseWait(options.probeDatabase, options.backoffMs, options.maxBackoffMs, logger);
  const logFailure = rateLimitedLog(logger, 10, 60_000);
  const logWorkerError = rateLimitedLog(logger, 5, 60_000);

  const processJob = (job: Job<MetricSubmission>, token?: string) =>
    options.storage.track("the database", () => storeJob(job, token));
  const storeJob = async (job: Job<MetricSubmission>, token?: string) => {
    for (;;) {
      try {
        return await options.process(job.data);
      } catch (error) {
        if (!isTransientDatabaseError(error)) throw error;
        try {
          await databaseWait.untilAvailable(error);
        } catch (closed) {
          if (!(closed instanceof DatabaseWaitClosed)) throw closed;
          // Stopping while the database is down: back to the queue for later, no attempt used.
          await job.moveToDelayed(Date.now() + options.backoffMs, token);
          throw new DelayedError();
        }
      }
    }
  };

  const worker = new Worker<MetricSubmission>(INGEST_QUEUE_NAME, processJob, {
    connection,
    prefix: options.prefix,
    concurrency: options.concurrency,
    lockDuration: options.lockMs,
    stalledInterval: options.stalledCheckMs,
    maxStalledCount: options.maxStalled,
  });
  worker.on("failed", (job, error) => {
    const final = job !== undefined && job.attemptsMade >= (job.opts.attempts ?? 1);
    if (final) telemetry.jobsFailedFinal.inc();
    logFailure(
      { reason: error.message, jobId: job?.id, attempt: job?.attemptsMade, final },
      final
        ? "submission failed for good; it stays in the failed set (edge-ingest jobs failed / jobs retry)"
        : "submission attempt failed; retrying",
    );
  });
  worker.on("stalled", (jobId) => {
    telemetry.jobsStalled.inc();
    logger.warn({ jobId }, "submission's worker stopped before finishing it; handed to another worker");
  });
  worker.on("error", (error) => logWorkerError({ reason: error.message }, "worker error"));
  await worker.waitUntilReady();
  return {
    // Waits for the jobs in progress to finish (those waiting for the database are put back).
    // With Redis unreachable no job can be finished or put back, and BullMQ's close would wait for
    // its QUIT forever: close at once, and the stalled check hands those jobs on after a restart.
    close: async () => {
      databaseWait.close();
      await worker.close(connection.status !== "ready");
      connection.disconnect();
    },
  };
}
