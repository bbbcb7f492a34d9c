import type { Aedes, Client, PublishPacket } from "aedes";
import mqttPacket, { type Packet } from "mqtt-packet";
import type { Logger } from "pino";
import { rateLimitedLog } from "../../logger.ts";
import { type MqttPrincipal, mayReceive, scopesReceiving, shareScope } from "../access.ts";
import { receiveMaximumOf } from "../mqtt5.ts";
import { LOCAL_TOPIC_PREFIX } from "../topics.ts";
import type { GroupSpec, SharedEntry, SharedQueue } from "./queue.ts";
import { groupId, parseSharedFilter, SHARE_PREFIX, type SharedFilter } from "./share.ts";

/** How long a broker's membership records and liveness last without renewal, and how often it renews them. */
const ALIVE_MS = 30_000;
const RENEW_MS = 10_000;
/** How often a broker looks for entries it was not told about (released by a sweep). */
const POLL_MS = 1000;

export interface SharedGroupsOptions {
  queue: SharedQueue;
  /** This broker's consumer name: entries it reads are pending under it until acknowledged. */
  brokerId: string;
  principalOf(client: Client): MqttPrincipal | undefined;
  /** Messages a member may hold unacknowledged (`MQTT_SHARED_MAX_INFLIGHT`). */
  maxInflight: number;
  /** How long a persistent session outlives its connection, in seconds. */
  sessionExpiryOf(client: Client): number;
  countDropped(count: number): void;
  countRedelivered(count: number): void;
  logger: Logger;
}

interface Member {
  readonly client: Client;
  readonly group: LocalGroup;
  qos: 0 | 1;
  /** Entry ids of what it holds unacknowledged, by packet id. */
  readonly inflight: Map<number, string>;
}

interface LocalGroup {
  readonly spec: GroupSpec;
  readonly members: Member[];
  /** Where the next round-robin turn starts. */
  turn: number;
  reading: boolean;
  /** Told of new entries while reading: read once more. */
  again: boolean;
  /** The last read filled the members: the queue may hold more. */
  backlog: boolean;
}

type ClientWithIds = Client & {
  _nextId: number;
  _parser: { prependListener(event: "packet", listener: (packet: Packet) => void): void };
};

/**
 * The members of shared subscriptions on this broker (docs/devices.md, "Shared subscriptions").
 * Aedes holds a member's `$share/…` filter like any subscription (no message is ever published on
 * such a topic), restores it with the session, and asks `join` each time; the messages come from
 * the group's queue (src/broker/shared/queue.ts), which every broker with a member reads. An entry
 * goes to one member with room (round robin), stays pending until that member's PUBACK (QoS 1) or
 * its write (QoS 0), and goes back to the group when the member's connection ends first.
 */
export class SharedGroups {
  private readonly groups = new Map<string, LocalGroup>();
  private readonly members = new Map<Client, Map<string, Member>>();
  private readonly work = new Set<Promise<unknown>>();
  private readonly timers: NodeJS.Timeout[] = [];
  private stopListening: (() => void) | undefined;
  private closed = false;
  private readonly logError: ReturnType<typeof rateLimitedLog>;

  constructor(private readonly options: SharedGroupsOptions) {
    this.logError = rateLimitedLog(options.logger, 5, 60_000);
  }

  /**
   * Shared subscriptions are granted at most QoS 1: a SUBSCRIBE asking QoS 2 for one is read as
   * asking 1 (Aedes answers the SUBACK with the QoS asked), from the client's first packet on.
   */
  static grantAtMostQos1(client: Client): void {
    (client as ClientWithIds)._parser.prependListener("packet", (packet) => {
      if (packet.cmd !== "subscribe") return;
      for (const subscription of packet.subscriptions) {
        if (subscription.qos > 1 && subscription.topic.startsWith(SHARE_PREFIX)) subscription.qos = 1;
      }
    });
  }

  /** Before the first member: this broker's entries are its own while it renews its liveness. */
  async start(broker: Aedes): Promise<void> {
    const { queue, brokerId } = this.options;
    await queue.heartbeat(brokerId, ALIVE_MS);
    this.stopListening = await queue.onAppended((id) => {
      const group = this.groups.get(id);
      if (group) this.pump(group);
    });
    this.timers.push(
      setInterval(() => this.track(this.renew().then(() => this.sweep())), RENEW_MS),
      setInterval(() => {
        for (const group of this.groups.values()) this.pump(group);
      }, POLL_MS),
    );
    for (const timer of this.timers) timer.unref();
    broker.on("unsubscribe", (topics, client) => {
      for (const topic of topics) {
        const shared = parseSharedFilter(topic);
        const principal = this.options.principalOf(client);
        if (shared && shared !== "invalid" && principal) {
          this.track(this.part(client, groupId(shareScope(principal), shared), true));
        }
      }
    });
    broker.on("clientDisconnect", (client) => this.track(this.disconnected(client)));
  }

  /**
   * A member joins (SUBSCRIBE, or its session restored): the group exists, with it as a member,
   * before the SUBACK. Resolves with the QoS granted: at most 1.
   */
  async join(client: Client, shared: SharedFilter, qos: number, principal: MqttPrincipal): Promise<0 | 1> {
    const scope = shareScope(principal);
    const spec = { id: groupId(scope, shared), scope, filter: shared.filter };
    await this.options.queue.join(spec, client.id, Date.now() + ALIVE_MS);
    const granted: 0 | 1 = qos > 0 ? 1 : 0;
    if (client.closed) return granted;
    let group = this.groups.get(spec.id);
    if (!group) {
      group = { spec, members: [], turn: 0, reading: false, again: false, backlog: false };
      this.groups.set(spec.id, group);
    }
    let own = this.members.get(client);
    if (!own) {
      own = new Map();
      this.members.set(client, own);
      this.listenForAcks(client, own);
    }
    const member = own.get(spec.id);
    if (member) member.qos = granted;
    else {
      const joined: Member = { client, group, qos: granted, inflight: new Map() };
      own.set(spec.id, joined);
      group.members.push(joined);
    }
    this.pump(group);
    return granted;
  }

  /**
   * Aedes's `published` hook: a message routed from this broker (a plain publish, a will, feedback)
   * is offered to the groups once, here, where it enters the deployment. Stored readings are offered
   * by the worker (src/worker/processor.ts); `$` topics are the broker's own and not shared.
   */
  published = (packet: PublishPacket, _client: Client | null, done: (error?: Error) => void): void => {
    if (packet.topic.startsWith("$") || packet.topic.startsWith(LOCAL_TOPIC_PREFIX)) {
      done();
      return;
    }
    const message = {
      topic: packet.topic,
      payload: Buffer.isBuffer(packet.payload) ? packet.payload : Buffer.from(packet.payload),
      qos: packet.qos,
      ...(packet.properties && { properties: packet.properties }),
      ...((packet as { messageExpiry?: number }).messageExpiry !== undefined && {
        messageExpiry: (packet as { messageExpiry?: number }).messageExpiry,
      }),
    };
    this.options.queue.append(scopesReceiving(packet.topic), [message]).then(
      ({ dropped }) => {
        if (dropped > 0) this.options.countDropped(dropped);
        done();
      },
      (error: Error) => {
        this.logError({ reason: error.message, topic: packet.topic }, "cannot offer a message to shared subscriptions");
        done(error);
      },
    );
  };

  /** Ends every member here: what they hold goes back to the groups (the broker is closing). */
  async close(): Promise<void> {
    this.closed = true;
    for (const timer of this.timers) clearInterval(timer);
    this.stopListening?.();
    for (const client of [...this.members.keys()]) this.track(this.disconnected(client));
    while (this.work.size > 0) await Promise.allSettled([...this.work]);
  }

  private track(promise: Promise<unknown>): void {
    const tracked = promise.catch((error: Error) =>
      this.logError({ reason: error.message }, "shared subscriptions: a queue operation failed"),
    );
    this.work.add(tracked);
    tracked.finally(() => this.work.delete(tracked));
  }

  private listenForAcks(client: Client, own: Map<string, Member>): void {
    (client as ClientWithIds)._parser.prependListener("packet", (packet) => {
      if (packet.cmd !== "puback" || packet.messageId === undefined) return;
      for (const member of own.values()) {
        const entry = member.inflight.get(packet.messageId);
        if (entry === undefined) continue;
        member.inflight.delete(packet.messageId);
        this.track(this.options.queue.ack(member.group.spec.id, [entry]));
        if (member.group.backlog) this.pump(member.group);
        return;
      }
    });
  }

  /** Room for more: each member up to its in-flight bound (a QoS 0 member's entries end as written). */
  private room(member: Member): number {
    if (member.client.closed || !member.client.connected) return 0;
    const bound = Math.min(this.options.maxInflight, receiveMaximumOf(member.client));
    return member.qos === 0 ? bound : bound - member.inflight.size;
  }

  /** Reads entries for the group's members while they have room and the queue has entries. */
  private pump(group: LocalGroup): void {
    if (group.reading) {
      group.again = true;
      return;
    }
    group.reading = true;
    this.track(
      this.read(group).finally(() => {
        group.reading = false;
      }),
    );
  }

  private async read(group: LocalGroup): Promise<void> {
    const { queue, brokerId } = this.options;
    for (;;) {
      group.again = false;
      const room = group.members.reduce((sum, member) => sum + this.room(member), 0);
      if (room <= 0 || this.closed) return;
      let entries: SharedEntry[];
      try {
        entries = await queue.read(group.spec.id, brokerId, room);
      } catch (error) {
        // The group ended under its members (their records lapsed): made again, they go on.
        if (/NOGROUP/.test((error as Error).message)) await this.renew();
        throw error;
      }
      const delivered: string[] = [];
      const unplaced: string[] = [];
      for (const entry of entries) {
        const outcome = this.deliver(group, entry);
        if (outcome === "unplaced") unplaced.push(entry.id);
        else if (outcome === "done") delivered.push(entry.id);
      }
      await Promise.all([queue.ack(group.spec.id, delivered), queue.release(group.spec.id, unplaced)]);
      group.backlog = entries.length === room;
      if (entries.length < room && !group.again) return;
    }
  }

  /** Writes the entry to the next member with room: `done` needs no acknowledgement, `inflight` waits for one. */
  private deliver(group: LocalGroup, entry: SharedEntry): "done" | "inflight" | "unplaced" {
    const { message } = entry;
    if (message.messageExpiry !== undefined && message.messageExpiry <= Date.now()) return "done";
    const count = group.members.length;
    for (let i = 0; i < count; i++) {
      const member = group.members[(group.turn + i) % count] as Member;
      if (this.room(member) <= 0) continue;
      group.turn = (group.turn + i + 1) % count;
      const principal = this.options.principalOf(member.client);
      if (!principal || !mayReceive(principal, message.topic)) return "done";
      const qos = Math.min(message.qos, member.qos) as 0 | 1;
      const packet = {
        cmd: "publish",
        topic: message.topic,
        payload: message.payload,
        qos,
        retain: false,
        dup: false,
        ...(message.properties && { properties: message.properties }),
        ...(message.messageExpiry !== undefined && { messageExpiry: message.messageExpiry }),
      } as Packet & { messageId?: number };
      if (qos > 0) {
        const client = member.client as ClientWithIds;
        packet.messageId = client._nextId;
        client._nextId = client._nextId >= 65_535 ? 1 : client._nextId + 1;
        member.inflight.set(packet.messageId, entry.id);
      }
      mqttPacket.writeToStream(packet, member.client.conn);
      return qos > 0 ? "inflight" : "done";
    }
    return "unplaced";
  }

  /** The member leaves its group here; what it holds goes back; `forGood`: its membership ends too. */
  private async part(client: Client, id: string, forGood: boolean): Promise<void> {
    const own = this.members.get(client);
    const member = own?.get(id);
    if (!own || !member) return;
    own.delete(id);
    if (own.size === 0) this.members.delete(client);
    const { group } = member;
    group.members.splice(group.members.indexOf(member), 1);
    if (group.members.length === 0) this.groups.delete(id);
    const held = [...member.inflight.values()];
    member.inflight.clear();
    if (held.length > 0) this.options.countRedelivered(held.length);
    const { queue } = this.options;
    await queue.release(id, held);
    // A connection that took over the client id here is the member now.
    if (this.heldElsewhere(client)) return;
    if (forGood) await queue.leave(id, client.id);
    else await queue.join(group.spec, client.id, Date.now() + this.options.sessionExpiryOf(client) * 1000);
  }

  private heldElsewhere(client: Client): boolean {
    for (const other of this.members.keys())
      if (other !== client && other.id === client.id && !other.closed) return true;
    return false;
  }

  /** A connection ended: a clean session's memberships end with it, a persistent one's wait for its return. */
  private async disconnected(client: Client): Promise<void> {
    const own = this.members.get(client);
    if (!own) return;
    const forGood = client.clean !== false;
    await Promise.all([...own.keys()].map((id) => this.part(client, id, forGood)));
  }

  /** Renews this broker's liveness and its members' records (and makes a group again that ended under them). */
  private async renew(): Promise<void> {
    const { queue, brokerId } = this.options;
    await queue.heartbeat(brokerId, ALIVE_MS);
    const aliveUntil = Date.now() + ALIVE_MS;
    await Promise.all(
      [...this.groups.values()].flatMap((group) =>
        group.members.map((member) => queue.join(group.spec, member.client.id, aliveUntil)),
      ),
    );
  }

  private async sweep(): Promise<void> {
    const { released } = await this.options.queue.sweep(Date.now());
    if (released > 0) this.options.countRedelivered(released);
  }
}
