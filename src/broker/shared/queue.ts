import type { PublishPacket } from "aedes";
import type { PubSub } from "../../pubsub.ts";
import { topicMatches } from "./share.ts";

/** A message as a group keeps it until a member has it. */
export interface SharedMessage {
  topic: string;
  payload: Buffer;
  qos: 0 | 1 | 2;
  /** MQTT 5 properties of the publish (user properties, content type …). */
  properties?: PublishPacket["properties"];
  /** When it goes stale (MQTT 5 Message Expiry), epoch ms. */
  messageExpiry?: number;
}

export interface SharedEntry {
  id: string;
  message: SharedMessage;
}

/** A group: who may be in it and what it covers (src/broker/shared/share.ts). */
export interface GroupSpec {
  id: string;
  scope: string;
  filter: string;
}

/**
 * The groups of the deployment and the messages each holds for its members: in this process
 * (embedded) or in Redis (distributed, src/broker/shared/redis-queue.ts), one queue per group shared
 * by every broker with a member of it. A message is appended once, where it enters the deployment,
 * to every group whose filter it matches; a broker reads an entry for one of its members, and the
 * entry stays pending until that member has it (`ack`) or goes back to the group (`release`).
 */
export interface SharedQueue {
  /** Makes the group if it is new, and records the member as alive until `aliveUntil` (epoch ms). */
  join(group: GroupSpec, memberId: string, aliveUntil: number): Promise<void>;
  /** The member is gone for good; the last member's leaving ends the group and what it held. */
  leave(groupId: string, memberId: string): Promise<void>;
  /** Whether a scope has any group (the worker reads stored rows back only then). */
  hasGroups(scope: string): Promise<boolean>;
  /** Appends each message to every group of the scopes whose filter matches it; counts what a full group refused. */
  append(scopes: string[], messages: SharedMessage[]): Promise<{ dropped: number }>;
  /** Up to `count` entries not handed to any broker yet, now pending for `consumer`. */
  read(groupId: string, consumer: string, count: number): Promise<SharedEntry[]>;
  ack(groupId: string, ids: string[]): Promise<void>;
  /** Pending entries back to the group, for any member of any broker. */
  release(groupId: string, ids: string[]): Promise<void>;
  /** This broker is alive (its pending entries stay its own) for `ttlMs`. */
  heartbeat(consumer: string, ttlMs: number): Promise<void>;
  /** Ends members not alive any more (and groups left without one); releases entries of dead brokers. */
  sweep(now: number): Promise<{ released: number }>;
  /** Calls `listener` with a group's id when it has new entries, in any process. */
  onAppended(listener: (groupId: string) => void): Promise<() => void>;
}

/** Where a queue says which groups have new entries. */
export const APPENDED_CHANNEL = "shared-appended";

/** Tells every broker (through the deployment's pub/sub) which groups have new entries. */
export async function announce(pubsub: PubSub, groupIds: Iterable<string>): Promise<void> {
  const ids = [...new Set(groupIds)];
  if (ids.length > 0) await pubsub.publish(APPENDED_CHANNEL, JSON.stringify(ids));
}

export async function listenForAppends(pubsub: PubSub, listener: (groupId: string) => void): Promise<() => void> {
  return pubsub.subscribe(APPENDED_CHANNEL, (message) => {
    for (const id of JSON.parse(message) as string[]) listener(id);
  });
}

interface LocalGroup {
  spec: GroupSpec;
  /** Member id to the time it is alive until. */
  members: Map<string, number>;
  /** Entries no broker has read yet, oldest first. */
  ready: SharedEntry[];
  pending: Map<string, SharedEntry>;
}

/** Embedded mode: the groups in this process. */
export class LocalSharedQueue implements SharedQueue {
  private readonly groups = new Map<string, LocalGroup>();
  private sequence = 0;

  constructor(
    private readonly pubsub: PubSub,
    /** Most entries a group holds; more are refused and counted. */
    private readonly maxMessages: number,
  ) {}

  async join(group: GroupSpec, memberId: string, aliveUntil: number): Promise<void> {
    let local = this.groups.get(group.id);
    if (!local) {
      local = { spec: group, members: new Map(), ready: [], pending: new Map() };
      this.groups.set(group.id, local);
    }
    local.members.set(memberId, aliveUntil);
  }

  async leave(groupId: string, memberId: string): Promise<void> {
    const group = this.groups.get(groupId);
    if (!group) return;
    group.members.delete(memberId);
    if (group.members.size === 0) this.groups.delete(groupId);
  }

  async hasGroups(scope: string): Promise<boolean> {
    for (const group of this.groups.values()) if (group.spec.scope === scope) return true;
    return false;
  }

  async append(scopes: string[], messages: SharedMessage[]): Promise<{ dropped: number }> {
    let dropped = 0;
    const appended: string[] = [];
    for (const group of this.groups.values()) {
      if (!scopes.includes(group.spec.scope)) continue;
      for (const message of messages) {
        if (!topicMatches(group.spec.filter, message.topic)) continue;
        if (group.ready.length + group.pending.size >= this.maxMessages) {
          dropped++;
          continue;
        }
        group.ready.push({ id: String(++this.sequence), message });
        appended.push(group.spec.id);
      }
    }
    await announce(this.pubsub, appended);
    return { dropped };
  }

  async read(groupId: string, _consumer: string, count: number): Promise<SharedEntry[]> {
    const group = this.groups.get(groupId);
    if (!group) return [];
    const entries = group.ready.splice(0, count);
    for (const entry of entries) group.pending.set(entry.id, entry);
    return entries;
  }

  async ack(groupId: string, ids: string[]): Promise<void> {
    const group = this.groups.get(groupId);
    for (const id of ids) group?.pending.delete(id);
  }

  async release(groupId: string, ids: string[]): Promise<void> {
    const group = this.groups.get(groupId);
    if (!group || ids.length === 0) return;
    for (const id of ids) {
      const entry = group.pending.get(id);
      if (!entry) continue;
      group.pending.delete(id);
      group.ready.push(entry);
    }
    await announce(this.pubsub, [groupId]);
  }

  async heartbeat(): Promise<void> {}

  async sweep(now: number): Promise<{ released: number }> {
    for (const [id, group] of this.groups) {
      for (const [member, aliveUntil] of group.members) if (aliveUntil < now) group.members.delete(member);
      if (group.members.size === 0) this.groups.delete(id);
    }
    return { released: 0 };
  }

  onAppended(listener: (groupId: string) => void): Promise<() => void> {
    return listenForAppends(this.pubsub, listener);
  }
}
