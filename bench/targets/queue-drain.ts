/**
 * The `edge-ingest-no-database` target's worker: the production BullMQ worker, with the service's
 * configuration, taking the `ingest` queue's jobs and completing each without writing it anywhere.
 * Beside the broker as it ships, it measures the pipeline up to and through the queue without
 * PostgreSQL. Prints `READY`.
 */
import pino from "pino";
import { loadConfig } from "../../src/config.ts";
import { redisConnector } from "../../src/redis/connection.ts";
import { createTelemetry } from "../../src/telemetry/prometheus.ts";
import { StallWatch } from "../../src/telemetry/stall-watch.ts";
import { startBullmqWorker } from "../../src/worker/bullmq-worker.ts";

const config = loadConfig();
const logger = pino({ level: "warn" });
const worker = await startBullmqWorker({
  connect: redisConnector({ url: config.REDIS_URL as string }),
  prefix: config.REDIS_PREFIX,
  concurrency: config.WORKER_CONCURRENCY,
  process: async () => undefined,
  probeDatabase: async () => undefined,
  backoffMs: config.JOB_BACKOFF_MS,
  maxBackoffMs: config.DATABASE_WAIT_MAX_MS,
  lockMs: config.JOB_LOCK_MS,
  stalledCheckMs: config.JOB_STALLED_CHECK_MS,
  maxStalled: config.JOB_MAX_STALLED,
  storage: new StallWatch("storage", 2000, logger),
  telemetry: createTelemetry(),
  logger,
});
console.log("READY");
process.once("SIGTERM", async () => {
  await worker.close();
  process.exit(0);
});
