/** One stored reading. Times are epoch milliseconds so a job stays small and JSON-safe. */
export interface MetricPoint {
  /** The reading's agent, when it is not the submission's (an MQTT batch spans a tenant's agents). */
  agentId?: string;
  name: string;
  value: number;
  ts: number;
  dedupeId?: string;
  tags?: Record<string, string>;
}

/** The one job every source produces (BullMQ job name `metric-submission`). */
export interface MetricSubmission {
  /** Unique per submission: a retried job is applied at most once (ReadingStore.store, src/store/readings.ts). */
  id: string;
  tenantId: string;
  /** The agent of every reading that does not name its own. */
  agentId: string;
  source: "mqtt" | "http";
  receivedAt: number;
  metrics: MetricPoint[];
}

export const SUBMISSION_JOB_NAME = "metric-submission";
