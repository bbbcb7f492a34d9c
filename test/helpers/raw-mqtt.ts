import { once } from "node:events";
import net from "node:net";
import mqttPacket, { type Packet } from "mqtt-packet";

/**
 * An MQTT 3.1.1 (or 5.0) client on a bare socket, for what a library client will not do: stop
 * reading its socket on purpose, write thousands of packets in one go, or break the protocol.
 */
export interface RawMqttClient {
  socket: net.Socket;
  /** Every packet received, in order (only while reading). */
  received: Packet[];
  /** Writes packets without waiting for anything. */
  send(...packets: Parameters<typeof mqttPacket.generate>[0][]): void;
  /** Stops reading the socket: what the broker writes piles up in the kernel, then in the broker. */
  stopReading(): void;
  startReading(): void;
  /** Resolves once the broker has closed the connection. */
  closed: Promise<void>;
}

export async function rawConnect(
  port: number,
  options: {
    clientId?: string;
    username?: string;
    password?: string;
    clean?: boolean;
    will?: { topic: string; payload: Buffer; qos: 0 | 1 | 2; retain: boolean };
    protocolVersion?: 4 | 5;
    keepalive?: number;
    properties?: Record<string, unknown>;
  } = {},
): Promise<RawMqttClient> {
  const protocolVersion = options.protocolVersion ?? 4;
  const socket = net.connect(port, "127.0.0.1");
  socket.on("error", () => undefined);
  const parser = mqttPacket.parser({ protocolVersion });
  const received: Packet[] = [];
  parser.on("packet", (packet) => received.push(packet));
  socket.on("data", (chunk) => parser.parse(chunk));
  const closed = once(socket, "close").then(() => undefined);
  await once(socket, "connect");
  const send: RawMqttClient["send"] = (...packets) => {
    socket.write(Buffer.concat(packets.map((packet) => mqttPacket.generate(packet, { protocolVersion }))));
  };
  send({
    cmd: "connect",
    protocolId: "MQTT",
    protocolVersion,
    clean: options.clean ?? true,
    clientId: options.clientId ?? `raw-${Math.random().toString(16).slice(2)}`,
    keepalive: options.keepalive ?? 0,
    properties: options.properties,
    username: options.username,
    password: options.password === undefined ? undefined : Buffer.from(options.password),
    will: options.will,
  });
  const connack = await waitFor(received, (p) => p.cmd === "connack");
  const code = connack.cmd === "connack" ? (protocolVersion === 5 ? connack.reasonCode : connack.returnCode) : 0;
  if (code) {
    socket.destroy();
    throw Object.assign(new Error(`CONNACK ${code}`), { code });
  }
  return {
    socket,
    received,
    send,
    stopReading: () => socket.pause(),
    startReading: () => socket.resume(),
    closed,
  };
}

/** Waits for a received packet that matches, polling the list the client fills. */
export async function waitFor(received: Packet[], match: (packet: Packet) => boolean, timeoutMs = 10_000) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const found = received.find(match);
    if (found) return found;
    if (Date.now() > deadline) throw new Error(`no matching packet within ${timeoutMs} ms`);
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

/** `count` QoS 0 publishes of `payload` to `topic`, as one buffer. */
export function publishes(topic: string, payload: string | Buffer, count: number, retain = false): Buffer {
  const one = mqttPacket.generate({ cmd: "publish", topic, payload, qos: 0, retain, dup: false });
  return Buffer.concat(Array.from({ length: count }, () => one));
}

/** Sends CONNECT bytes as given (what a library refuses to write) and resolves with the CONNACK's return code. */
export async function connackFor(port: number, connect: Buffer): Promise<number> {
  const socket = net.connect(port, "127.0.0.1");
  socket.on("error", () => undefined);
  const parser = mqttPacket.parser();
  const received: Packet[] = [];
  parser.on("packet", (packet) => received.push(packet));
  socket.on("data", (chunk) => parser.parse(chunk));
  socket.write(connect);
  try {
    return ((await waitFor(received, (p) => p.cmd === "connack")) as { returnCode: number }).returnCode;
  } finally {
    socket.destroy();
  }
}

/** A CONNECT packet, then altered: `edit` gets its bytes (flags at index 9 for a short packet). */
export function connectBytes(
  fields: { clientId: string; username?: string; password?: string },
  edit: (bytes: Buffer) => void,
): Buffer {
  const bytes = Buffer.from(
    mqttPacket.generate({
      cmd: "connect",
      protocolId: "MQTT",
      protocolVersion: 4,
      clean: true,
      keepalive: 0,
      clientId: fields.clientId,
      username: fields.username,
      password: fields.password === undefined ? undefined : Buffer.from(fields.password),
    }),
  );
  edit(bytes);
  return bytes;
}
