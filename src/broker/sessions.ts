import type { Aedes, Client } from "aedes";
import { decidePublish, type MqttPrincipal, type PublishDecision } from "./access.ts";
import { SESSION_MARKER_TOPIC } from "./topics.ts";

/** What the broker knows of an authenticated connection. */
export interface Session {
  principal: MqttPrincipal;
  violations: number;
  /** The decisions for this connection's recent topics: a device publishes to a few, over and over. */
  decisions: Map<string, PublishDecision>;
}

const DECISIONS_PER_SESSION = 64;

/** The sessions of this broker's authenticated connections, by Aedes client. */
export class Sessions {
  private readonly byClient = new WeakMap<Client, Session>();

  open(client: Client, principal: MqttPrincipal): Session {
    const session: Session = { principal, violations: 0, decisions: new Map() };
    this.byClient.set(client, session);
    return session;
  }

  of(client: Client | null | undefined): Session | undefined {
    return client ? this.byClient.get(client) : undefined;
  }
}

/** `decidePublish`, remembered per session. */
export function decideCached(session: Session | undefined, principal: MqttPrincipal, topic: string): PublishDecision {
  const cached = session?.decisions.get(topic);
  if (cached) return cached;
  const decision = decidePublish(principal, topic);
  if (session) {
    if (session.decisions.size >= DECISIONS_PER_SESSION) session.decisions.clear();
    session.decisions.set(topic, decision);
  }
  return decision;
}

/**
 * MQTT-3.2.2-2: a client that resumes a persistent session (CleanSession=0) is told it has one,
 * subscriptions or not. Aedes decides session-present by the session's subscriptions alone, so an
 * agent (it subscribes to nothing) was always told 0; each persistent session gets a subscription
 * to a topic nothing is published on, stored and shared like any other, and cleared with the
 * session by a CleanSession=1 connect.
 */
export function markPersistentSessions(broker: Aedes): void {
  broker.on("clientReady", (client) => {
    if (client.clean || client.subscriptions[SESSION_MARKER_TOPIC]) return;
    client.subscribe({ topic: SESSION_MARKER_TOPIC, qos: 0 }, () => undefined);
  });
}
