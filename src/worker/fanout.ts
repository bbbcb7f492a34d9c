import { EventEmitter } from "node:events";
import { Redis } from "ioredis";
import type { Logger } from "pino";
import type { StoredMetric } from "./store-metrics.ts";

export type MetricListener = (metrics: StoredMetric[]) => void;

/** Live delivery of stored metrics to subscribers of one tenant (SSE streams, MQTT viewers). */
export interface FanOut {
  readonly backend: "in-process" | "redis";
  publish(tenantId: string, metrics: StoredMetric[]): Promise<void>;
  /** Resolves once the subscription is live; the returned function ends it. */
  subscribe(tenantId: string, listener: MetricListener): Promise<() => void>;
  close(): Promise<void>;
}

/** Embedded mode: publisher and subscribers share this process. */
export class LocalFanOut implements FanOut {
  readonly backend: FanOut["backend"] = "in-process";
  private readonly emitter = new EventEmitter().setMaxListeners(0);

  async publish(tenantId: string, metrics: StoredMetric[]): Promise<void> {
    this.deliver(tenantId, metrics);
  }

  deliver(tenantId: string, metrics: StoredMetric[]): void {
    this.emitter.emit(tenantId, metrics);
  }

  async subscribe(tenantId: string, listener: MetricListener): Promise<() => void> {
    this.emitter.on(tenantId, listener);
    return () => this.emitter.off(tenantId, listener);
  }

  listenerCount(tenantId: string): number {
    return this.emitter.listenerCount(tenantId);
  }

  async close(): Promise<void> {
    this.emitter.removeAllListeners();
  }
}

/**
 * Distributed mode: workers publish on a Redis channel per tenant; each API process subscribes to
 * a tenant's channel while it has at least one local subscriber for it.
 */
export class RedisFanOut implements FanOut {
  readonly backend: FanOut["backend"] = "redis";
  private readonly local = new LocalFanOut();
  private readonly publisher: Redis;
  private readonly subscriber: Redis;
  /** Channels this process listens on, each settled once Redis confirmed the SUBSCRIBE. */
  private readonly subscriptions = new Map<string, Promise<void>>();

  constructor(
    redisUrl: string,
    private readonly prefix: string,
    logger: Logger,
  ) {
    this.publisher = new Redis(redisUrl, { maxRetriesPerRequest: 1 });
    this.subscriber = new Redis(redisUrl);
    // ioredis reconnects by itself; without a listener its errors would crash the process.
    for (const connection of [this.publisher, this.subscriber]) {
      connection.on("error", (error: Error) => logger.warn({ err: error }, "fan-out Redis connection error"));
    }
    this.subscriber.on("message", (channel: string, message: string) => {
      this.local.deliver(channel.slice(this.channel("").length), JSON.parse(message) as StoredMetric[]);
    });
  }

  private channel(tenantId: string): string {
    return `${this.prefix}:fanout:${tenantId}`;
  }

  async publish(tenantId: string, metrics: StoredMetric[]): Promise<void> {
    await this.publisher.publish(this.channel(tenantId), JSON.stringify(metrics));
  }

  async subscribe(tenantId: string, listener: MetricListener): Promise<() => void> {
    const unsubscribe = await this.local.subscribe(tenantId, listener);
    let subscribed = this.subscriptions.get(tenantId);
    if (!subscribed) {
      subscribed = this.subscriber.subscribe(this.channel(tenantId)).then(() => undefined);
      this.subscriptions.set(tenantId, subscribed);
    }
    try {
      await subscribed;
    } catch (error) {
      unsubscribe();
      this.subscriptions.delete(tenantId);
      throw error;
    }
    return () => {
      unsubscribe();
      if (this.local.listenerCount(tenantId) === 0) {
        this.subscriptions.delete(tenantId);
        this.subscriber.unsubscribe(this.channel(tenantId)).catch(() => undefined);
      }
    };
  }

  async close(): Promise<void> {
    await this.local.close();
    this.publisher.disconnect();
    this.subscriber.disconnect();
  }
}
