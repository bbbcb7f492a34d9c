import type { PubSub } from "../pubsub.ts";

/** A metric as stored, in the shape live subscribers (SSE streams, MQTT viewers) receive. */
export interface StoredMetric {
  id: string;
  tenantId: string;
  agentId: string;
  name: string;
  value: number;
  ts: string;
  tags: Record<string, string> | null;
}

export type MetricListener = (metrics: StoredMetric[]) => void;

const channel = (tenantId: string) => `fanout:${tenantId}`;

/**
 * Live delivery of stored metrics to subscribers of one tenant (SSE streams), one channel per
 * tenant, so a subscriber can only ever be handed its own tenant's metrics.
 */
export class FanOut {
  constructor(private readonly pubsub: PubSub) {}

  get backend(): PubSub["backend"] {
    return this.pubsub.backend;
  }

  async publish(tenantId: string, metrics: StoredMetric[]): Promise<void> {
    await this.pubsub.publish(channel(tenantId), JSON.stringify(metrics));
  }

  /** Whether anyone, in any process, follows the tenant's live metrics (Redis: cached briefly). */
  hasSubscribers(tenantId: string): Promise<boolean> {
    return this.pubsub.hasSubscribers(channel(tenantId));
  }

  subscribe(tenantId: string, listener: MetricListener): Promise<() => void> {
    return this.pubsub.subscribe(channel(tenantId), (message) => listener(JSON.parse(message) as StoredMetric[]));
  }
}
