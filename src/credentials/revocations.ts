import type { PubSub } from "../pubsub.ts";

const CHANNEL = "credential-revoked";
/** How far before its subscription was lost a process looks for revocations it may have missed (clocks differ). */
const CLOCK_MARGIN_MS = 60_000;

/**
 * Tells every process of the deployment that a credential was revoked, so each drops it from its
 * cache and disconnects its live MQTT sessions at once instead of after the cache expires. An
 * announcement made while a process's subscription was lost (a Redis restart or failover) never
 * reaches it: once the subscription is back, the process asks the database what was revoked since
 * and hears of those as if announced.
 */
export class Revocations {
  constructor(
    private readonly pubsub: PubSub,
    private readonly revokedSince: (since: Date) => Promise<string[]>,
  ) {}

  announce(username: string): Promise<void> {
    return this.pubsub.publish(CHANNEL, username);
  }

  async onRevoked(listener: (username: string) => void): Promise<() => void> {
    let listening = true;
    this.pubsub.onResubscribed((lostAt) => {
      if (!listening) return;
      this.revokedSince(new Date(lostAt - CLOCK_MARGIN_MS)).then(
        (usernames) => {
          if (listening) for (const username of usernames) listener(username);
        },
        () => undefined,
      );
    });
    const unsubscribe = await this.pubsub.subscribe(CHANNEL, listener);
    return () => {
      listening = false;
      unsubscribe();
    };
  }
}
