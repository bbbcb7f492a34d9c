import type { RejectionReason } from "../ingest/refusals.ts";
import type { PubSub } from "../pubsub.ts";

/** A refusal as a tenant's console sees it: whose, why, and how many it stands for. */
export interface LiveRejection {
  agent_id: string;
  source: "mqtt" | "http";
  reason: RejectionReason;
  message: string;
  count: number;
  topic?: string;
  at: string;
}

const channel = (tenantId: string) => `rejections:${tenantId}`;

/**
 * Live refusals of one tenant's readings, for its console: the broker sends what it sends an
 * agent's feedback topic (already one message per reason per interval), the API one message per
 * request. Nothing is sent while nobody of the tenant follows them.
 */
export class LiveRejections {
  constructor(private readonly pubsub: PubSub) {}

  async publish(tenantId: string, rejection: LiveRejection): Promise<void> {
    if (await this.pubsub.hasSubscribers(channel(tenantId))) {
      await this.pubsub.publish(channel(tenantId), JSON.stringify(rejection));
    }
  }

  subscribe(tenantId: string, listener: (rejection: LiveRejection) => void): Promise<() => void> {
    return this.pubsub.subscribe(channel(tenantId), (message) => listener(JSON.parse(message) as LiveRejection));
  }
}
