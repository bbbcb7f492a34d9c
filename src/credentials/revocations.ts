import type { PubSub } from "../pubsub.ts";

const CHANNEL = "credential-revoked";
/** How far before its subscription was lost a process looks for revocations it may have missed (clocks differ). */
const CLOCK_MARGIN_MS = 60_000;

type RevokedListener = (username: string) => void;

/**
 * Tells every process of the deployment that a credential was revoked, so each drops it from its
 * cache and disconnects its live MQTT sessions at once instead of after the cache expires. An
 * announcement made while a process's subscription was lost (a Redis restart or failover) never
 * reaches it: once the subscription is back, the process asks the database what was revoked since
 * (once, for all its listeners) and hears of those as if announced.
 */
export class Revocations {
  private readonly listeners = new Set<RevokedListener>();
  private subscribed: Promise<unknown> | undefined;

  constructor(
    private readonly pubsub: PubSub,
    revokedSince: (since: Date) => Promise<string[]>,
    /** A catch-up that could not ask the database: those revocations wait for the cache's expiry. */
    onCatchUpError: (error: Error) => void,
  ) {
    pubsub.onResubscribed((lostAt) => {
      if (this.listeners.size === 0) return;
      revokedSince(new Date(lostAt - CLOCK_MARGIN_MS)).then((usernames) => {
        for (const username of usernames) this.tell(username);
      }, onCatchUpError);
    });
  }

  announce(username: string): Promise<void> {
    return this.pubsub.publish(CHANNEL, username);
  }

  async onRevoked(listener: RevokedListener): Promise<() => void> {
    this.listeners.add(listener);
    // One subscription for every listener; one that failed is tried again by the next.
    this.subscribed ??= this.pubsub
      .subscribe(CHANNEL, (username) => this.tell(username))
      .catch((error: unknown) => {
        this.subscribed = undefined;
        throw error;
      });
    try {
      await this.subscribed;
    } catch (error) {
      this.listeners.delete(listener);
      throw error;
    }
    return () => this.listeners.delete(listener);
  }

  private tell(username: string): void {
    for (const listener of this.listeners) listener(username);
  }
}
