import type { PubSub } from "../pubsub.ts";

const CHANNEL = "credential-revoked";

/**
 * Tells every process of the deployment that a credential was revoked, so each drops it from its
 * cache and disconnects its live MQTT sessions at once instead of after the cache expires.
 */
export class Revocations {
  constructor(private readonly pubsub: PubSub) {}

  announce(username: string): Promise<void> {
    return this.pubsub.publish(CHANNEL, username);
  }

  onRevoked(listener: (username: string) => void): Promise<() => void> {
    return this.pubsub.subscribe(CHANNEL, listener);
  }
}
