import type { Logger } from "pino";
import { viewerScope } from "../broker/access.ts";
import type { SharedQueue } from "../broker/shared/queue.ts";
import { storedReadingMessage } from "../broker/viewer-feed.ts";
import type { SubmissionProcessor } from "../ingest/queue.ts";
import type { FanOut, StoredMetric } from "../live/fanout.ts";
import { rateLimitedLog } from "../logger.ts";
import type { ReadingStore } from "../store/readings.ts";
import type { Telemetry } from "../telemetry/prometheus.ts";

/**
 * Stores one submission, then hands the stored rows to live subscribers and to the tenant's
 * shared-subscription groups, reading them back only when the tenant has either (most of the time
 * nobody watches). A fan-out failure is counted and logged but does not fail the job: the rows are
 * committed, and a retry would only find its submission already applied.
 */
export function createProcessor(deps: {
  readings: ReadingStore;
  fanout: FanOut;
  /** Shared subscriptions: the tenant's viewer groups get each stored reading once (src/broker/shared/). */
  shared: SharedQueue;
  telemetry: Telemetry;
  logger: Logger;
}): SubmissionProcessor {
  const { readings, fanout, shared, telemetry, logger } = deps;
  const logFanoutError = rateLimitedLog(logger, 5, 60_000);
  const logShareError = rateLimitedLog(logger, 5, 60_000);
  const offerToGroups = async (stored: StoredMetric[]) => {
    const { tenantId } = stored[0] as StoredMetric;
    const messages = stored.map((metric) => ({ ...storedReadingMessage(metric), qos: 1 as const }));
    await shared.append([viewerScope(tenantId)], messages).then(
      ({ dropped }) => telemetry.mqttSharedDropped.inc(dropped),
      (error: Error) => {
        telemetry.fanoutErrors.inc(stored.length);
        logShareError(
          { reason: error.message, tenantId },
          "shared subscriptions missed stored metrics; they are stored",
        );
      },
    );
  };
  return async (submission) => {
    const stopTimer = telemetry.batchDuration.startTimer();
    let stored: StoredMetric[] = [];
    const scope = viewerScope(submission.tenantId);
    let sharing = false;
    try {
      const [watched, grouped] = await Promise.all([
        fanout.hasSubscribers(submission.tenantId),
        shared.hasGroups(scope),
      ]);
      sharing = grouped;
      if (watched || grouped) stored = await readings.store(submission);
      else await readings.storeQuietly(submission);
    } catch (error) {
      telemetry.jobsFailed.inc();
      throw error;
    } finally {
      stopTimer();
    }
    telemetry.jobsCompleted.inc();
    if (stored.length === 0) return;
    if (sharing) await offerToGroups(stored);
    await fanout.publish(submission.tenantId, stored).catch((error: Error) => {
      telemetry.fanoutErrors.inc(stored.length);
      logFanoutError(
        { reason: error.message, tenantId: submission.tenantId },
        "live fan-out failed; the metrics are stored",
      );
    });
  };
}
