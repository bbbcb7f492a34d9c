import type { Logger } from "pino";
import { viewerScope } from "../broker/access.ts";
import type { SharedQueue } from "../broker/shared/queue.ts";
import { storedReadingMessage } from "../broker/viewer-feed.ts";
import type { SubmissionProcessor } from "../ingest/queue.ts";
import type { MetricSubmission } from "../ingest/submission.ts";
import type { FanOut, StoredMetric } from "../live/fanout.ts";
import { rateLimitedLog } from "../logger.ts";
import { isTransientDatabaseError } from "../store/database-errors.ts";
import type { ReadingStore } from "../store/readings.ts";
import type { Telemetry } from "../telemetry/prometheus.ts";
import { GroupCommit } from "./group-commit.ts";

/**
 * Statements a worker process runs at once. Its other jobs in flight (`WORKER_CONCURRENCY`) wait
 * meanwhile and go together in the next statement, so a statement's fixed cost is shared between
 * them. One at a time drained a backlog of small jobs fastest (`npm run bench -- --only=backlog-drain`:
 * 17,400 readings/s at 32 jobs in flight, against 13,000 with four statements at a time).
 */
const STATEMENTS_IN_FLIGHT = 1;
/** Most readings one statement takes: its JSON parameter stays under a megabyte or so. */
const READINGS_PER_STATEMENT = 5000;

/**
 * Stores submissions, those that wait together in one statement (src/worker/group-commit.ts), then
 * hands the stored rows to live subscribers and to the tenant's shared-subscription groups, reading
 * them back only when the tenant has either (most of the time nobody watches). A fan-out failure is
 * counted and logged but does not fail the job: the rows are committed, and a retry would only find
 * its submission already applied.
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
  /** One statement for a group of submissions, then the live feeds of each tenant in it. */
  const storeGroup = async (group: MetricSubmission[]) => {
    const tenants = [...new Set(group.map((submission) => submission.tenantId))];
    const stopTimer = telemetry.batchDuration.startTimer();
    let stored: StoredMetric[] = [];
    let sharing = new Set<string>();
    try {
      const [watched, grouped] = await Promise.all([
        Promise.all(tenants.map((tenantId) => fanout.hasSubscribers(tenantId))),
        Promise.all(tenants.map((tenantId) => shared.hasGroups(viewerScope(tenantId)))),
      ]);
      sharing = new Set(tenants.filter((_, i) => grouped[i]));
      if (watched.some(Boolean) || sharing.size > 0) stored = await readings.store(...group);
      else await readings.storeQuietly(...group);
    } finally {
      stopTimer();
    }
    for (const tenantId of tenants) {
      const rows = stored.filter((metric) => metric.tenantId === tenantId);
      if (rows.length === 0) continue;
      if (sharing.has(tenantId)) await offerToGroups(rows);
      await fanout.publish(tenantId, rows).catch((error: Error) => {
        telemetry.fanoutErrors.inc(rows.length);
        logFanoutError({ reason: error.message, tenantId }, "live fan-out failed; the metrics are stored");
      });
    }
  };
  // A statement that failed for a reason of its own (not the database being away) is tried again
  // one submission at a time, so one bad submission fails alone.
  const commits = new GroupCommit(storeGroup, {
    maxInFlight: STATEMENTS_IN_FLIGHT,
    maxReadings: READINGS_PER_STATEMENT,
    isolate: (error) => !isTransientDatabaseError(error),
  });
  // Counted per submission once it settles: a group that failed may still store most of its
  // submissions when they are written again one at a time.
  return (submission) =>
    commits.add(submission).then(
      () => telemetry.jobsCompleted.inc(),
      (error: unknown) => {
        telemetry.jobsFailed.inc();
        throw error;
      },
    );
}
