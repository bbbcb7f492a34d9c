import { Counter, collectDefaultMetrics, Gauge, Histogram, Registry } from "prom-client";
import { within } from "../deadline.ts";
import type { DisconnectReason, RejectionReason } from "../ingest/refusals.ts";
import type { MetricSubmission } from "../ingest/submission.ts";
import type { StallWatch } from "./stall-watch.ts";

export type Source = MetricSubmission["source"];
/** A scrape is answered in time even when a dependency hangs: a gauge then keeps its last value. */
const COLLECT_DEADLINE_MS = 1000;

/** Where work can be held: acknowledgements (brokers, API) and storage (workers). */
export type HeldPath = "acknowledgement" | "storage";

/** The process's Prometheus metrics, on a registry of its own (several apps may share a process in tests). */
export function createTelemetry() {
  const registry = new Registry();
  collectDefaultMetrics({ register: registry });
  let queueDepth: () => Promise<number> = async () => 0;
  let failedJobs: () => Promise<number> = async () => 0;
  let sessionsWaiting: () => Promise<number> = async () => 0;
  const holds = new Map<HeldPath, StallWatch>();

  const telemetry = {
    registry,
    accepted: new Counter({
      name: "edge_ingest_metrics_accepted_total",
      help: "Metrics accepted into a durable submission, by source",
      labelNames: ["source"] as const,
      registers: [registry],
    }),
    rejected: new Counter({
      name: "edge_ingest_metrics_rejected_total",
      help: "Metrics refused, by source and reason",
      labelNames: ["source", "reason"] as const,
      registers: [registry],
    }),
    jobsEnqueued: new Counter({
      name: "edge_ingest_jobs_enqueued_total",
      help: "metric-submission jobs made durable by this process",
      registers: [registry],
    }),
    jobsCompleted: new Counter({
      name: "edge_ingest_jobs_completed_total",
      help: "metric-submission jobs stored by this process's worker",
      registers: [registry],
    }),
    jobsFailed: new Counter({
      name: "edge_ingest_jobs_failed_total",
      help: "metric-submission job attempts that failed in this process's worker",
      registers: [registry],
    }),
    jobsFailedFinal: new Counter({
      name: "edge_ingest_jobs_failed_for_good_total",
      help: "metric-submission jobs that used their last attempt in this process's worker and went to the failed set",
      registers: [registry],
    }),
    jobsStalled: new Counter({
      name: "edge_ingest_jobs_stalled_total",
      help: "metric-submission jobs whose worker stopped before finishing them, handed on by this process",
      registers: [registry],
    }),
    fanoutErrors: new Counter({
      name: "edge_ingest_fanout_errors_total",
      help: "Stored metrics that could not be sent to live subscribers",
      registers: [registry],
    }),
    redisCheck: new Gauge({
      name: "edge_ingest_redis_check",
      help: "Whether the queue's Redis passes a durability check (1) or not (0): persistence (AOF, or REDIS_PERSISTENCE=none), eviction (noeviction), on the primary and (REDIS_MIN_REPLICAS) each replica; replicas (at least REDIS_MIN_REPLICAS online)",
      labelNames: ["check"] as const,
      registers: [registry],
    }),
    mqttConnections: new Gauge({
      name: "edge_ingest_mqtt_connections",
      help: "Open MQTT connections on this broker",
      registers: [registry],
    }),
    mqttSessionsExpired: new Counter({
      name: "edge_ingest_mqtt_sessions_expired_total",
      help: "Persistent sessions removed because their client stayed away past their expiry (MQTT_MAX_SESSION_EXPIRY_SECONDS, MQTT 5 Session Expiry Interval)",
      registers: [registry],
    }),
    mqttSharedDropped: new Counter({
      name: "edge_ingest_mqtt_shared_dropped_total",
      help: "Messages a shared-subscription group did not keep because it held MQTT_SHARED_QUEUE_MAX_MESSAGES already",
      registers: [registry],
    }),
    mqttSharedRedelivered: new Counter({
      name: "edge_ingest_mqtt_shared_redelivered_total",
      help: "Shared-subscription messages put back to their group unacknowledged (the member's connection ended, or its broker stopped) for another member",
      registers: [registry],
    }),
    mqttQos0Dropped: new Counter({
      name: "edge_ingest_mqtt_qos0_dropped_total",
      help: "QoS 0 readings accepted but dropped because the queue could not take them",
      registers: [registry],
    }),
    mqttUnacknowledged: new Counter({
      name: "edge_ingest_mqtt_unacknowledged_total",
      help: "QoS 1/2 publishes left unacknowledged (connection closed) because the queue could not take them",
      registers: [registry],
    }),
    mqttDisconnects: new Counter({
      name: "edge_ingest_mqtt_forced_disconnects_total",
      help: "Connections closed by the broker, by reason",
      labelNames: ["reason"] as const,
      registers: [registry],
    }),
    throttledSeconds: new Counter({
      name: "edge_ingest_throttled_seconds_total",
      help: "Time MQTT connections were not read because they were over a rate limit, by tenant and limit",
      labelNames: ["tenant_id", "limit"] as const,
      registers: [registry],
    }),
    httpThrottled: new Counter({
      name: "edge_ingest_http_throttled_total",
      help: "HTTP ingestion requests answered 429 because they were over a rate limit, by tenant and limit",
      labelNames: ["tenant_id", "limit"] as const,
      registers: [registry],
    }),
    mqttConnectsRefused: new Counter({
      name: "edge_ingest_mqtt_connects_refused_total",
      help: "MQTT CONNECTs refused, by reason",
      labelNames: ["reason"] as const,
      registers: [registry],
    }),
    mqttConnectionsDelayed: new Counter({
      name: "edge_ingest_mqtt_connections_delayed_total",
      help: "MQTT connections held back because their listener was over MQTT_MAX_CONNECTION_RATE, by listener",
      labelNames: ["listener"] as const,
      registers: [registry],
    }),
    mqttSubscriptionsDenied: new Counter({
      name: "edge_ingest_mqtt_subscriptions_denied_total",
      help: "Subscription filters refused by the ACL",
      registers: [registry],
    }),
    mqttPubackSeconds: new Histogram({
      name: "edge_ingest_mqtt_puback_seconds",
      help: "Time from receiving a QoS 1/2 metric publish to acknowledging it (its submission is durable)",
      buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5],
      registers: [registry],
    }),
    batchDuration: new Histogram({
      name: "edge_ingest_worker_batch_duration_seconds",
      help: "Time to store one submission",
      buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5],
      registers: [registry],
    }),
    /** Where the queue gauges read from: the queue of this process. */
    setQueueSources(sources: { depth: () => Promise<number>; failed: () => Promise<number> }) {
      queueDepth = sources.depth;
      failedJobs = sources.failed;
    },
    /** What the held gauges read for one path. */
    watchHolds(path: HeldPath, watch: StallWatch) {
      holds.set(path, watch);
    },
    /** Where the waiting-sessions gauge reads from: the broker's session expiry. */
    setSessionSource(waiting: () => Promise<number>) {
      sessionsWaiting = waiting;
    },
    countRejections(source: Source, reasons: Iterable<RejectionReason>) {
      for (const reason of reasons) telemetry.rejected.inc({ source, reason });
    },
    countDisconnect(reason: DisconnectReason) {
      telemetry.mqttDisconnects.inc({ reason });
    },
  };
  new Gauge({
    name: "edge_ingest_mqtt_sessions_waiting",
    help: "Persistent sessions of disconnected clients, waiting for their client or their expiry (every broker)",
    registers: [registry],
    async collect() {
      await within(sessionsWaiting(), COLLECT_DEADLINE_MS, "no answer").then(
        (count) => this.set(count),
        () => undefined,
      );
    },
  });
  new Gauge({
    name: "edge_ingest_queue_depth",
    help: "metric-submission jobs waiting, delayed or running",
    registers: [registry],
    async collect() {
      // An unreachable queue shows in /readyz; the gauge keeps its last value rather than fail or hang the scrape.
      await within(queueDepth(), COLLECT_DEADLINE_MS, "no answer").then(
        (depth) => this.set(depth),
        () => undefined,
      );
    },
  });
  new Gauge({
    name: "edge_ingest_jobs_failed_waiting",
    help: "metric-submission jobs in the failed set, waiting for `edge-ingest jobs retry`",
    registers: [registry],
    async collect() {
      await within(failedJobs(), COLLECT_DEADLINE_MS, "no answer").then(
        (count) => this.set(count),
        () => undefined,
      );
    },
  });
  const heldGauge = (name: string, help: string, read: (held: ReturnType<StallWatch["held"]>) => number) =>
    new Gauge({
      name,
      help,
      labelNames: ["path"] as const,
      registers: [registry],
      collect() {
        for (const [path, watch] of holds) this.set({ path }, read(watch.held()));
      },
    });
  heldGauge(
    "edge_ingest_held",
    "Operations waiting on a dependency for 2 s or more: submissions not yet acknowledged (path=acknowledgement), jobs not yet stored (path=storage)",
    (held) => held.count,
  );
  heldGauge(
    "edge_ingest_held_seconds",
    "How long the oldest operation of the path in progress has waited (0: none in progress)",
    (held) => held.oldestSeconds,
  );
  return telemetry;
}

export type Telemetry = ReturnType<typeof createTelemetry>;
