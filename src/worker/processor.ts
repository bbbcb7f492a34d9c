import type { Logger } from "pino";
import type { SubmissionProcessor } from "../ingest/queue.ts";
import type { FanOut, StoredMetric } from "../live/fanout.ts";
import { rateLimitedLog } from "../logger.ts";
import type { ReadingStore } from "../store/readings.ts";
import type { Telemetry } from "../telemetry/prometheus.ts";

/**
 * Stores one submission, then hands the stored rows to live subscribers, reading them back only
 * when the tenant has any (most of the time nobody watches). A fan-out failure is
 * counted and logged but does not fail the job: the rows are committed, and a retry would only
 * find its submission already applied.
 */
export function createProcessor(deps: {
  readings: ReadingStore;
  fanout: FanOut;
  telemetry: Telemetry;
  logger: Logger;
}): SubmissionProcessor {
  const { readings, fanout, telemetry, logger } = deps;
  const logFanoutError = rateLimitedLog(logger, 5, 60_000);
  return async (submission) => {
    const stopTimer = telemetry.batchDuration.startTimer();
    let stored: StoredMetric[] = [];
    try {
      if (await fanout.hasSubscribers(submission.tenantId)) stored = await readings.store(submission);
      else await readings.storeQuietly(submission);
    } catch (error) {
      telemetry.jobsFailed.inc();
      throw error;
    } finally {
      stopTimer();
    }
    telemetry.jobsCompleted.inc();
    if (stored.length === 0) return;
    await fanout.publish(submission.tenantId, stored).catch((error: Error) => {
      telemetry.fanoutErrors.inc(stored.length);
      logFanoutError(
        { reason: error.message, tenantId: submission.tenantId },
        "live fan-out failed; the metrics are stored",
      );
    });
  };
}
