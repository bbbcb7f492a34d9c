import { randomBytes } from "node:crypto";
import type { Client, ConnectPacket } from "aedes";
import mqttPacket, { type IConnackPacket, type IPublishPacket, type Packet } from "mqtt-packet";
import { MQTT5, REFUSALS, type RefusalName } from "../ingest/refusals.ts";
import { parseSharedFilter } from "./shared/share.ts";

/**
 * MQTT 5.0 over Aedes 1.2, which speaks 3.1 and 3.1.1 only (docs/devices.md, "The engine").
 *
 * mqtt-packet, Aedes's codec, reads and writes 5.0. Its parser switches to 5.0 by itself once it
 * has read a 5.0 CONNECT; so a 5.0 connection is handed to Aedes as 3.1.1, and what Aedes writes
 * to it is written as 5.0 here, with the reason codes and properties this layer keeps per
 * connection: the CONNACK's (refusal or what the broker offers), each PUBACK's and PUBREC's
 * (a refused publish), each SUBACK's, and a DISCONNECT when the broker closes the connection.
 * Inbound it resolves topic aliases, enforces the Receive Maximum it advertised and stamps each
 * publish's Message Expiry; outbound it drops what expired or what is over the client's Maximum
 * Packet Size. Session expiry is src/broker/session-expiry.ts. A 3.1.1 connection costs one WeakMap
 * lookup a packet written.
 */

/** What the broker offers every 5.0 client, and where it counts what it refuses. */
export interface Mqtt5Settings {
  /** Inbound QoS 1/2 publishes a client may have unacknowledged (Receive Maximum). */
  receiveMaximum: number;
  /** Topic aliases a client may set (Topic Alias Maximum; 0: none). */
  topicAliasMaximum: number;
  /** The largest packet the broker reads (Maximum Packet Size). */
  maximumPacketSize: number;
  /** The longest keep alive the broker allows (0: any); longer or none is answered with Server Keep Alive. */
  keepaliveLimit: number;
  /** Most levels in a topic filter (`MQTT_MAX_TOPIC_LEVELS`). */
  maxTopicLevels: number;
  /** The longest Session Expiry Interval granted (`MQTT_MAX_SESSION_EXPIRY_SECONDS`). */
  maxSessionExpirySeconds: number;
  /** Counts a connection this layer closes for breaking the protocol. */
  countDisconnect(reason: "receive_maximum_exceeded" | "topic_alias_invalid"): void;
  /** Counts subscription filters this layer refuses (not filters), as the ACL's refusals are. */
  countRefusedFilters(count: number): void;
}

/** The reason code (and what it says, when the client asked) of one acknowledgement. */
export interface AckReason {
  code: number;
  reasonString?: string;
  userProperties?: Record<string, string>;
}

/** A refusal of the catalogue, as an acknowledgement's or a DISCONNECT's reason. */
export function reasonOf(name: RefusalName, reasonString?: string): AckReason {
  return reasonString === undefined ? { code: REFUSALS[name].mqtt5 } : { code: REFUSALS[name].mqtt5, reasonString };
}

interface Mqtt5Connection {
  readonly client: Client;
  readonly limits: Mqtt5Settings;
  /** Request Problem Information: reason strings and user properties only on CONNACK, PUBLISH and DISCONNECT if false. */
  readonly problemInformation: boolean;
  /** The client's Maximum Packet Size, when it set one. */
  readonly maximumPacketSize: number | undefined;
  /** The client's Receive Maximum: QoS 1/2 publishes it takes unacknowledged at once. */
  readonly clientReceiveMaximum: number;
  /** The properties of the CONNACK that accepts the connection. */
  readonly connackProperties: NonNullable<IConnackPacket["properties"]>;
  /** How long the session outlives the connection, in seconds, as granted (0: it ends with it). */
  readonly sessionExpirySeconds: number;
  /** Clean Start: a session the client had is discarded, even one that will outlive this connection. */
  readonly cleanStart: boolean;
  /** Why the CONNECT was refused, when it was. */
  refusal?: AckReason;
  /** The CONNACK accepted the connection: from then on the broker says why it closes it. */
  accepted: boolean;
  /** Why the broker closes the connection, when it does. */
  closeReason?: AckReason;
  /** The client sent DISCONNECT (or the connection is gone): nothing more is written. */
  ended: boolean;
  readonly aliases: Map<number, string>;
  /** Message ids of inbound QoS 1/2 publishes not yet acknowledged (PUBACK, or PUBCOMP for QoS 2). */
  readonly inflight: Set<number>;
  readonly acks: Map<number, AckReason>;
  /** Each SUBSCRIBE, by packet id, for its SUBACK's reason codes. */
  readonly subscribes: Map<number, PendingSubscribe>;
  /** How many filters each UNSUBSCRIBE named, by packet id. */
  readonly unsubscribes: Map<number, number>;
  readonly writeOptions: { protocolVersion: 5; maximumPacketSize?: number };
}

/** Aedes's per-client parser, whose settings decide how the next packets are read. */
type ParsingClient = Client & {
  _parser: { settings: object; prependListener(event: "packet", listener: (packet: Packet) => void): void };
};

const connections = new WeakMap<object, Mqtt5Connection>();

/** An MQTT 5 client's granted Session Expiry Interval in seconds; undefined for 3.1 and 3.1.1. */
export function sessionExpiryOf(client: Client): number | undefined {
  return connections.get(client.conn)?.sessionExpirySeconds;
}

/** How many QoS 1/2 publishes the client takes unacknowledged (its Receive Maximum; 3.1.1: no bound). */
export function receiveMaximumOf(client: Client): number {
  return connections.get(client.conn)?.clientReceiveMaximum ?? 65_535;
}

/** An MQTT 5 client asked for Clean Start with a session that outlives its connection. */
export function startsCleanMqtt5(client: Client): boolean {
  const connection = connections.get(client.conn);
  return connection?.cleanStart === true && connection.sessionExpirySeconds > 0;
}

/**
 * Why a subscription filter is refused before Aedes sees it, or undefined: a filter that is not
 * one (Aedes would close the connection over it, as 3.1.1 requires), or a `$share/` filter that is
 * not a shared subscription.
 */
export function filterRefusal(filter: string, maxTopicLevels: number): number | undefined {
  if (parseSharedFilter(filter) === "invalid") return REFUSALS.bad_filter.mqtt5;
  const levels = filter.split("/");
  const valid =
    filter.length > 0 &&
    levels.length <= maxTopicLevels &&
    levels.every(
      (level, i) =>
        (!level.includes("#") || (level === "#" && i === levels.length - 1)) && (!level.includes("+") || level === "+"),
    );
  return valid ? undefined : REFUSALS.bad_filter.mqtt5;
}

/** A SUBSCRIBE's filters, and the reason codes of those refused before Aedes saw them. */
export interface PendingSubscribe {
  filters: string[];
  refused: (number | undefined)[];
}

/**
 * The SUBACK's codes, one per filter sent: Aedes granted or refused (128: not authorized) each
 * filter it saw, once per distinct filter, in the order it first appeared.
 */
export function subackCodes(pending: PendingSubscribe, granted: number[]): number[] {
  const distinct = [...new Set(pending.filters.filter((_, i) => pending.refused[i] === undefined))];
  return pending.filters.map((filter, i) => {
    const code = pending.refused[i] ?? granted[distinct.indexOf(filter)] ?? MQTT5.UNSPECIFIED_ERROR;
    return code === 128 ? REFUSALS.forbidden_filter.mqtt5 : code;
  });
}

/** The 5.0 CONNACK code for Aedes's own 3.1.1 return codes (refusals of ours carry their own). */
function connackCode(returnCode: number): number {
  switch (returnCode) {
    case 0:
      return MQTT5.SUCCESS;
    case 1:
      return MQTT5.UNSUPPORTED_PROTOCOL_VERSION;
    case 2:
      return MQTT5.CLIENT_IDENTIFIER_NOT_VALID;
    case 4:
      return MQTT5.BAD_USERNAME_OR_PASSWORD;
    case 5:
      return MQTT5.NOT_AUTHORIZED;
    default:
      return MQTT5.SERVER_UNAVAILABLE;
  }
}

function accept(connection: Mqtt5Connection, sessionPresent: boolean): IConnackPacket {
  connection.accepted = true;
  return { cmd: "connack", sessionPresent, reasonCode: MQTT5.SUCCESS, properties: connection.connackProperties };
}

/** Properties carrying a reason, when the client asked for them (or the packet always may). */
function reasonProperties(connection: Mqtt5Connection, reason: AckReason | undefined, always = false) {
  if (!reason || (!connection.problemInformation && !always)) return undefined;
  const properties: { reasonString?: string; userProperties?: Record<string, string> } = {};
  if (reason.reasonString) properties.reasonString = reason.reasonString;
  if (reason.userProperties) properties.userProperties = reason.userProperties;
  return Object.keys(properties).length > 0 ? properties : undefined;
}

/** What Aedes wrote (3.1.1-shaped), as the 5.0 packet to write instead; undefined: write nothing. */
function toMqtt5(packet: Packet, connection: Mqtt5Connection): Packet | undefined {
  switch (packet.cmd) {
    case "connack": {
      const reason = connection.refusal ?? (packet.returnCode ? { code: connackCode(packet.returnCode) } : undefined);
      return reason
        ? {
            cmd: "connack",
            sessionPresent: false,
            reasonCode: reason.code,
            properties: reasonProperties(connection, reason, true),
          }
        : accept(connection, packet.sessionPresent);
    }
    case "puback":
    case "pubrec": {
      const id = packet.messageId as number;
      const reason = connection.acks.get(id);
      connection.acks.delete(id);
      // A refused QoS 2 publish ends at its PUBREC (MQTT-4.3.3); an accepted one at its PUBCOMP.
      if (packet.cmd === "puback" || (reason && reason.code >= 0x80)) connection.inflight.delete(id);
      return {
        cmd: packet.cmd,
        messageId: id,
        reasonCode: reason?.code ?? MQTT5.SUCCESS,
        properties: reasonProperties(connection, reason),
      };
    }
    case "pubcomp":
      connection.inflight.delete(packet.messageId as number);
      return { ...packet, reasonCode: MQTT5.SUCCESS };
    case "pubrel":
      return { ...packet, reasonCode: MQTT5.SUCCESS };
    case "suback": {
      const pending = connection.subscribes.get(packet.messageId as number);
      connection.subscribes.delete(packet.messageId as number);
      const granted = packet.granted as number[];
      return { cmd: "suback", messageId: packet.messageId, granted: pending ? subackCodes(pending, granted) : granted };
    }
    case "unsuback": {
      const count = connection.unsubscribes.get(packet.messageId as number) ?? 1;
      connection.unsubscribes.delete(packet.messageId as number);
      return { cmd: "unsuback", messageId: packet.messageId, granted: Array(count).fill(MQTT5.SUCCESS) };
    }
    case "publish":
      return deliverable(packet, connection);
    default:
      return packet;
  }
}

/**
 * An outbound PUBLISH as this client may have it, or undefined when it may not: over its Maximum
 * Packet Size (MQTT-3.1.2-24), or past its Message Expiry (MQTT-3.3.2-5; the interval sent is what
 * remains of it, MQTT-3.3.2-6).
 */
function deliverable(packet: IPublishPacket & { messageExpiry?: number }, connection: Mqtt5Connection) {
  if (packet.messageExpiry !== undefined) {
    const remaining = Math.ceil((packet.messageExpiry - Date.now()) / 1000);
    if (remaining <= 0) return drop(packet, connection);
    packet = { ...packet, properties: { ...packet.properties, messageExpiryInterval: remaining } };
  }
  const max = connection.maximumPacketSize;
  if (max === undefined) return packet;
  const payload = typeof packet.payload === "string" ? Buffer.byteLength(packet.payload) : packet.payload.length;
  // Fixed header (at most 5), topic length and topic, packet id, properties (an expiry's 5 bytes).
  const size = 5 + 2 + Buffer.byteLength(packet.topic) + (packet.qos > 0 ? 2 : 0) + 6 + payload;
  return size <= max ? packet : drop(packet, connection);
}

/** Not sent: a QoS 1/2 message is completed as if the client had acknowledged it, so it does not wait in the session. */
function drop(packet: IPublishPacket, connection: Mqtt5Connection): undefined {
  if (packet.qos > 0 && packet.messageId !== undefined) {
    const ack: Packet = { cmd: packet.qos === 1 ? "puback" : "pubrec", messageId: packet.messageId };
    const parser = (connection.client as ParsingClient)._parser as unknown as {
      emit(event: "packet", p: Packet): void;
    };
    setImmediate(() => parser.emit("packet", ack));
  }
  return undefined;
}

const writeToStream = mqttPacket.writeToStream;

/**
 * Writes every packet for a 5.0 connection as 5.0 (Aedes writes through `mqttPacket.writeToStream`
 * with no options). Installed once, before the first connection.
 */
export function speakMqtt5(): void {
  if ((mqttPacket.writeToStream as { mqtt5?: boolean }).mqtt5) return;
  const write = (packet: Packet, stream: NodeJS.WritableStream, options?: object): boolean => {
    const connection = options === undefined ? connections.get(stream) : undefined;
    if (!connection) return writeToStream(packet, stream, options as never);
    if (connection.ended) return true;
    const translated = toMqtt5(packet, connection);
    return translated ? writeToStream(translated, stream, connection.writeOptions as never) : true;
  };
  mqttPacket.writeToStream = Object.assign(write, { mqtt5: true, cacheNumbers: writeToStream.cacheNumbers });
}

/**
 * A publish that breaks the protocol closes its connection with the reason, and is made one Aedes
 * refuses before anything else (an empty topic), so it is never acknowledged, stored or routed.
 */
function refuseInbound(
  connection: Mqtt5Connection,
  packet: IPublishPacket,
  name: "receive_maximum_exceeded" | "topic_alias_invalid" | "protocol_error",
  reasonString: string,
): void {
  packet.topic = "";
  if (name !== "protocol_error") connection.limits.countDisconnect(name);
  closeMqtt5(connection.client, reasonOf(name, reasonString));
}

/** Inbound 5.0 packets, before Aedes sees them: topic aliases, Receive Maximum, what acks need. */
function readPacket(connection: Mqtt5Connection, packet: Packet): void {
  switch (packet.cmd) {
    case "publish": {
      // When it goes stale: aedes-packet keeps `messageExpiry` through sessions and the retained store.
      const expiry = packet.properties?.messageExpiryInterval;
      if (expiry !== undefined) (packet as { messageExpiry?: number }).messageExpiry = Date.now() + expiry * 1000;
      const alias = packet.properties?.topicAlias;
      if (alias !== undefined) {
        if (alias === 0 || alias > connection.limits.topicAliasMaximum) {
          refuseInbound(
            connection,
            packet,
            "topic_alias_invalid",
            `topic aliases are 1-${connection.limits.topicAliasMaximum}`,
          );
          return;
        }
        if (packet.topic === "") {
          const topic = connection.aliases.get(alias);
          if (topic === undefined) {
            refuseInbound(connection, packet, "protocol_error", `topic alias ${alias} was never set`);
            return;
          }
          packet.topic = topic;
        } else {
          connection.aliases.set(alias, packet.topic);
        }
        // An alias is the publisher's own: the publish is routed and retained without it.
        delete packet.properties?.topicAlias;
      }
      if (packet.qos > 0 && packet.messageId !== undefined && !connection.inflight.has(packet.messageId)) {
        if (connection.inflight.size >= connection.limits.receiveMaximum) {
          refuseInbound(
            connection,
            packet,
            "receive_maximum_exceeded",
            `more than ${connection.limits.receiveMaximum} publishes unacknowledged`,
          );
          return;
        }
        connection.inflight.add(packet.messageId);
      }
      return;
    }
    case "subscribe": {
      const filters = packet.subscriptions.map((sub) => sub.topic);
      const refused = filters.map((filter) => filterRefusal(filter, connection.limits.maxTopicLevels));
      connection.subscribes.set(packet.messageId as number, { filters, refused });
      packet.subscriptions = packet.subscriptions.filter((_, i) => refused[i] === undefined);
      if (packet.subscriptions.length < filters.length) {
        connection.limits.countRefusedFilters(filters.length - packet.subscriptions.length);
      }
      return;
    }
    case "unsubscribe":
      connection.unsubscribes.set(packet.messageId as number, packet.unsubscriptions.length);
      return;
    case "disconnect":
      connection.ended = true;
      return;
    default:
      return;
  }
}

/**
 * Called by the CONNECT hook: a 5.0 CONNECT is taken as 3.1.1 by Aedes from here on, and its
 * connection spoken to in 5.0. Assigns a client id to a client that sent none (Assigned Client
 * Identifier), and shortens a keep alive over the limit (Server Keep Alive) where 3.1.1 refuses it.
 */
export function acceptMqtt5(client: Client, packet: ConnectPacket, limits: Mqtt5Settings): { assignedId: boolean } {
  if (packet.protocolVersion !== 5) return { assignedId: false };
  const parsing = client as ParsingClient;
  // The parser reads the next packets by these settings, which were the CONNECT packet itself.
  parsing._parser.settings = { protocolVersion: 5 };
  packet.protocolVersion = 4;
  const properties = packet.properties ?? {};
  const connackProperties: Mqtt5Connection["connackProperties"] = {
    receiveMaximum: limits.receiveMaximum,
    topicAliasMaximum: limits.topicAliasMaximum,
    maximumPacketSize: limits.maximumPacketSize,
    retainAvailable: true,
    wildcardSubscriptionAvailable: true,
    subscriptionIdentifiersAvailable: false,
    sharedSubscriptionAvailable: true,
  };
  const assignedId = !packet.clientId;
  if (assignedId) {
    packet.clientId = `auto-${randomBytes(8).toString("hex")}`;
    connackProperties.assignedClientIdentifier = packet.clientId;
  }
  if (limits.keepaliveLimit > 0 && (!packet.keepalive || packet.keepalive > limits.keepaliveLimit)) {
    packet.keepalive = limits.keepaliveLimit;
    connackProperties.serverKeepAlive = limits.keepaliveLimit;
  }
  const cleanStart = packet.clean !== false;
  // A session that expires at once is Aedes's clean session; a longer one is granted up to the limit.
  const sessionExpirySeconds = Math.min(properties.sessionExpiryInterval ?? 0, limits.maxSessionExpirySeconds);
  // (A Clean Start of a session that outlives the connection is done by the session expiry, src/broker/session-expiry.ts.)
  packet.clean = sessionExpirySeconds === 0;
  if (sessionExpirySeconds !== (properties.sessionExpiryInterval ?? 0)) {
    connackProperties.sessionExpiryInterval = sessionExpirySeconds;
  }
  const maximumPacketSize = properties.maximumPacketSize;
  const connection: Mqtt5Connection = {
    client,
    limits,
    problemInformation: properties.requestProblemInformation !== false,
    maximumPacketSize,
    clientReceiveMaximum: properties.receiveMaximum ?? 65_535,
    connackProperties,
    sessionExpirySeconds,
    cleanStart,
    ended: false,
    accepted: false,
    aliases: new Map(),
    inflight: new Set(),
    acks: new Map(),
    subscribes: new Map(),
    unsubscribes: new Map(),
    writeOptions: maximumPacketSize === undefined ? { protocolVersion: 5 } : { protocolVersion: 5, maximumPacketSize },
  };
  connections.set(client.conn, connection);
  parsing._parser.prependListener("packet", (inbound) => readPacket(connection, inbound));
  // A keep alive that ran out, or a malformed packet, closes the connection through an error.
  // An error (a keep alive that ran out, a malformed packet, a hook that refused) destroys the
  // connection before it closes it: the DISCONNECT goes out first.
  client.prependListener("error", (error: Error) => {
    sendDisconnect(
      connection,
      connection.closeReason ??
        (/keep ?alive/i.test(error.message)
          ? reasonOf("keep_alive_timeout")
          : reasonOf("protocol_error", error.message)),
    );
  });
  // A close nobody gave a reason for is Aedes's own: the broker closing, or the client id taken over.
  const close = client.close.bind(client);
  client.close = ((done?: () => void) => {
    sendDisconnect(
      connection,
      connection.closeReason ?? (client.broker.closed ? reasonOf("shutting_down") : reasonOf("session_taken_over")),
    );
    close(done);
  }) as Client["close"];
  return { assignedId };
}

/** Tells a live 5.0 connection the client did not end why the broker ends it (DISCONNECT), once. */
function sendDisconnect(connection: Mqtt5Connection, reason: AckReason): void {
  const { client } = connection;
  if (!client.closed && !connection.ended && connection.accepted && client.conn.writable) {
    writeToStream(
      { cmd: "disconnect", reasonCode: reason.code, properties: reasonProperties(connection, reason, true) },
      client.conn,
      connection.writeOptions as never,
    );
    // Writes are corked until the next tick (src/broker/outgoing.ts); the close destroys the socket before.
    const conn = client.conn as NodeJS.WritableStream & { writableCorked: number; uncork(): void };
    while (conn.writableCorked > 0) conn.uncork();
  }
  connection.ended = true;
}

/** The CONNACK refusing a 5.0 connection carries this reason (a 3.1.1 one gets Aedes's return code). */
export function refuseMqtt5(client: Client, reason: AckReason): void {
  const connection = connections.get(client.conn);
  if (connection) connection.refusal = reason;
}

/** The PUBACK / PUBREC of this publish carries this reason (5.0 only: a 3.1.1 client's is never made). */
export function acknowledgeMqtt5(client: Client | null, messageId: number | undefined, reason: () => AckReason): void {
  if (!client || messageId === undefined) return;
  connections.get(client.conn)?.acks.set(messageId, reason());
}

/** Why the broker is about to close the connection (a 5.0 client is told in its DISCONNECT). */
export function explainCloseMqtt5(client: Client | null, reason: AckReason): void {
  const connection = client ? connections.get(client.conn) : undefined;
  if (connection) connection.closeReason ??= reason;
}

/** Closes a connection; a 5.0 one is told why first (DISCONNECT with the reason code). */
export function closeMqtt5(client: Client, reason: AckReason): void {
  explainCloseMqtt5(client, reason);
  client.close();
}

/** The connection's 5.0 client, for a guard that holds only the connection (a packet too large). */
export function disconnectMqtt5Connection(conn: object, reason: AckReason): void {
  const connection = connections.get(conn);
  if (connection && !connection.ended) closeMqtt5(connection.client, reason);
}
