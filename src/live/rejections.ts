import type { RejectionReason } from "../ingest/refusals.ts";
import type { PubSub } from "../pubsub.ts";
import type { RejectionHistory } from "./rejection-history.ts";

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
 * Refusals of one tenant's readings, for its console: the broker sends what it sends an agent's
 * feedback topic (already one message per reason per interval), the API one message per request.
 * Each is kept in the tenant's history, for a console opened later, and sent live to whoever of the
 * tenant follows them (nothing is sent while nobody does).
 */
export class LiveRejections {
  constructor(
    private readonly pubsub: PubSub,
    readonly history: RejectionHistory,
  ) {}

  async publish(tenantId: string, rejection: LiveRejection): Promise<void> {
    const live = async () => {
      if (await this.pubsub.hasSubscribers(channel(tenantId))) {
        await this.pubsub.publish(channel(tenantId), JSON.stringify(rejection));
      }
    };
    await Promise.all([this.history.record(tenantId, rejection), live()]);
  }

  subscribe(tenantId: string, listener: (rejection: LiveRejection) => void): Promise<() => void> {
    return this.pubsub.subscribe(channel(tenantId), (message) => listener(JSON.parse(message) as LiveRejection));
  }
}
