/** One stored reading. Times are epoch milliseconds so a job stays small and JSON-safe. */
export interface MetricPoint {
  name: string;
  value: number;
  ts: number;
  dedupeId?: string;
  tags?: Record<string, string>;
}

/** The one job every source produces (BullMQ job name `metric-submission`). */
export interface MetricSubmission {
  /** Unique per submission: a retried job is applied at most once (src/worker/store-metrics.ts). */
  id: string;
  tenantId: string;
  agentId: string;
  source: "mqtt" | "http";
  receivedAt: number;
  metrics: MetricPoint[];
}

export const SUBMISSION_JOB_NAME = "metric-submission";
