import { EventEmitter } from "node:events";
import type { Redis } from "ioredis";
import type { Logger } from "pino";
import { rateLimitedLog } from "./logger.ts";
import type { RedisConnector } from "./redis/connection.ts";

export type MessageListener = (message: string) => void;

/** How long a Redis answer to "does anyone listen here?" is reused, at most. */
export const SUBSCRIBER_CHECK_MS = 1000;
/** Where a process says it started listening on a channel, so cached "nobody listens" answers go. */
const JOINED_CHANNEL = "pubsub-joined";

/** Messages on named channels between the processes of one deployment (or within one process). */
export interface PubSub {
  readonly backend: "in-process" | "redis";
  publish(channel: string, message: string): Promise<void>;
  /** Whether any process listens on the channel. */
  hasSubscribers(channel: string): Promise<boolean>;
  /** Resolves once the subscription is live; the returned function ends it. */
  subscribe(channel: string, listener: MessageListener): Promise<() => void>;
  /**
   * Called once this process's subscriptions are back after they were lost (a Redis restart or
   * failover), with when they were lost (epoch ms): messages published meanwhile never came.
   */
  onResubscribed(listener: (lostAt: number) => void): void;
  close(): Promise<void>;
}

/** Embedded mode: publishers and subscribers share this process. */
export class LocalPubSub implements PubSub {
  readonly backend: PubSub["backend"] = "in-process";
  private readonly emitter = new EventEmitter().setMaxListeners(0);

  async publish(channel: string, message: string): Promise<void> {
    this.deliver(channel, message);
  }

  async hasSubscribers(channel: string): Promise<boolean> {
    return this.listenerCount(channel) > 0;
  }

  deliver(channel: string, message: string): void {
    this.emitter.emit(channel, message);
  }

  async subscribe(channel: string, listener: MessageListener): Promise<() => void> {
    this.emitter.on(channel, listener);
    return () => this.emitter.off(channel, listener);
  }

  listenerCount(channel: string): number {
    return this.emitter.listenerCount(channel);
  }

  /** In one process nothing is ever lost. */
  onResubscribed(): void {}

  async close(): Promise<void> {
    this.emitter.removeAllListeners();
  }
}

/**
 * Distributed mode: Redis Pub/Sub under REDIS_PREFIX. A process subscribes to a channel while it
 * has at least one local listener on it.
 */
export class RedisPubSub implements PubSub {
  readonly backend: PubSub["backend"] = "redis";
  private readonly local = new LocalPubSub();
  private readonly publisher: Redis;
  private readonly subscriber: Redis;
  /** Channels this process listens on, each settled once Redis confirmed the SUBSCRIBE. */
  private readonly subscriptions = new Map<string, Promise<void>>();
  private readonly subscriberCounts = new Map<string, { listening: Promise<boolean>; until: number }>();
  private readonly resubscribed = new EventEmitter();

  constructor(
    connect: RedisConnector,
    private readonly prefix: string,
    logger: Logger,
    /** The publisher's: a Redis that stops answering fails a publish after this long. */
    commandTimeoutMs?: number,
  ) {
    this.publisher = connect("pubsub-publisher", { maxRetriesPerRequest: 1, commandTimeout: commandTimeoutMs });
    this.subscriber = connect("pubsub-subscriber");
    // ioredis reconnects by itself; without a listener its errors would crash the process.
    const logError = rateLimitedLog(logger, 5, 60_000);
    for (const connection of [this.publisher, this.subscriber]) {
      connection.on("error", (error: Error) => logError({ reason: error.message }, "pub/sub Redis connection error"));
    }
    const joined = this.redisChannel(JOINED_CHANNEL);
    this.subscriber.on("message", (channel: string, message: string) => {
      if (channel === joined) this.subscriberCounts.delete(message);
      else this.local.deliver(channel.slice(this.prefix.length + 1), message);
    });
    this.subscriber
      .subscribe(joined)
      .catch((error: Error) => logger.warn({ err: error }, "cannot follow pub/sub joins"));
    let reconnecting = false;
    let lostAt: number | undefined;
    this.subscriber.on("close", () => {
      lostAt ??= Date.now();
    });
    this.subscriber.on("ready", () => {
      if (reconnecting) this.rejoin(lostAt ?? Date.now());
      reconnecting = true;
      lostAt = undefined;
    });
  }

  onResubscribed(listener: (lostAt: number) => void): void {
    this.resubscribed.on("resubscribed", listener);
  }

  /**
   * Back after a reconnect (a Redis restart or failover), the subscriptions are made again and
   * announced: a publisher that asked while they were away cached "nobody listens", and would
   * otherwise skip what this process waits for until its cache lapsed. Announcements made while
   * this process was away went unheard, so its own cached answers go too.
   */
  private rejoin(lostAt: number): void {
    this.subscriberCounts.clear();
    const channels = [...this.subscriptions.keys()];
    if (channels.length === 0) return;
    this.subscriber
      .subscribe(...channels.map((channel) => this.redisChannel(channel)))
      .then(() => {
        this.resubscribed.emit("resubscribed", lostAt);
        return Promise.all(
          channels.map((channel) => this.publisher.publish(this.redisChannel(JOINED_CHANNEL), channel)),
        );
      })
      .catch(() => undefined);
  }

  private redisChannel(channel: string): string {
    return `${this.prefix}:${channel}`;
  }

  async publish(channel: string, message: string): Promise<void> {
    await this.publisher.publish(this.redisChannel(channel), message);
  }

  hasSubscribers(channel: string): Promise<boolean> {
    const now = Date.now();
    const cached = this.subscriberCounts.get(channel);
    if (cached && cached.until > now) return cached.listening;
    // On error, assume someone listens: storing is unaffected, only the read-back is spent.
    const listening = (this.publisher.pubsub("NUMSUB", this.redisChannel(channel)) as Promise<[string, number]>).then(
      ([, count]) => Number(count) > 0,
      () => true,
    );
    this.subscriberCounts.set(channel, { listening, until: now + SUBSCRIBER_CHECK_MS });
    return listening;
  }

  async subscribe(channel: string, listener: MessageListener): Promise<() => void> {
    const unsubscribe = await this.local.subscribe(channel, listener);
    let subscribed = this.subscriptions.get(channel);
    if (!subscribed) {
      // Announced once live, so publishers that cached "nobody listens" ask again before their next publish.
      subscribed = this.subscriber
        .subscribe(this.redisChannel(channel))
        .then(() => this.publisher.publish(this.redisChannel(JOINED_CHANNEL), channel))
        .then(() => undefined);
      this.subscriptions.set(channel, subscribed);
    }
    try {
      await subscribed;
    } catch (error) {
      unsubscribe();
      this.subscriptions.delete(channel);
      throw error;
    }
    return () => {
      unsubscribe();
      if (this.local.listenerCount(channel) === 0) {
        this.subscriptions.delete(channel);
        this.subscriber.unsubscribe(this.redisChannel(channel)).catch(() => undefined);
      }
    };
  }

  async close(): Promise<void> {
    await this.local.close();
    this.publisher.disconnect();
    this.subscriber.disconnect();
  }
}
