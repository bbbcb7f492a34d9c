import type net from "node:net";
import mqttPacket from "mqtt-packet";
import { describe, expect, it } from "vitest";
import { Outgoing } from "../../src/broker/outgoing.ts";
import { tcpPair } from "../helpers/tcp.ts";

/** A real TCP connection: the broker's side with its outgoing bound, and the client's side. */
async function connectedPair(limits: { maxBytes: number; maxMessages: number }) {
  const { client, socket } = await tcpPair();
  client.on("error", () => undefined);
  const overflows: { bytes: number; messages: number }[] = [];
  const outgoing = Outgoing.attach(socket, limits, (waiting) => overflows.push(waiting));
  return { client, socket, outgoing, overflows };
}

/** Writes a PUBLISH the way Aedes does (mqtt-packet, several writes per packet); returns what write said. */
const writePublish = (socket: net.Socket, payload: Buffer) =>
  mqttPacket.writeToStream({ cmd: "publish", topic: "load/x", payload, qos: 0, retain: false, dup: false }, socket);

const tick = () => new Promise((resolve) => setImmediate(resolve));

describe("Outgoing", () => {
  it("cuts a connection whose reader stops, once more messages wait than the bound allows, never telling the writer to wait", async () => {
    const { client, socket, overflows } = await connectedPair({
      maxBytes: 64 * 1024 * 1024,
      maxMessages: 500,
    });
    client.pause();
    const payload = Buffer.alloc(1000, 0x61);
    const answers: boolean[] = [];
    while (!socket.destroyed) {
      answers.push(writePublish(socket, payload));
      await tick();
    }
    expect(answers.every((answer) => answer)).toBe(true);
    expect(overflows).toHaveLength(1);
    expect(overflows[0]?.messages).toBe(501);
    client.destroy();
  });

  it("cuts a connection once more bytes wait than the bound allows", async () => {
    const { client, socket, overflows } = await connectedPair({ maxBytes: 256 * 1024, maxMessages: 1_000_000 });
    client.pause();
    const payload = Buffer.alloc(10_000, 0x61);
    while (!socket.destroyed) {
      writePublish(socket, payload);
      await tick();
    }
    expect(overflows).toHaveLength(1);
    expect(overflows[0]?.bytes).toBeGreaterThan(256 * 1024);
    client.destroy();
  });

  it("lets a client that reads receive far more than the bound, and counts only what waits", async () => {
    const { client, socket, outgoing, overflows } = await connectedPair({ maxBytes: 64 * 1024, maxMessages: 50 });
    let received = 0;
    client.on("data", (chunk: Buffer) => {
      received += chunk.length;
    });
    const payload = Buffer.alloc(100, 0x61);
    for (let i = 0; i < 5000; i++) {
      writePublish(socket, payload);
      await outgoing.drained();
      await tick();
    }
    await new Promise((resolve) => setTimeout(resolve, 200));
    expect(overflows).toEqual([]);
    expect(socket.destroyed).toBe(false);
    expect(outgoing.waitingMessages).toBe(0);
    expect(received).toBe(
      5000 *
        mqttPacket.generate({ cmd: "publish", topic: "load/x", payload, qos: 0, retain: false, dup: false }).length,
    );
    client.destroy();
  });

  it("corks the writes of one tick into one", async () => {
    const { client, socket } = await connectedPair({ maxBytes: 1024 * 1024, maxMessages: 1000 });
    const chunks: Buffer[] = [];
    client.on("data", (chunk: Buffer) => chunks.push(chunk));
    for (let id = 1; id <= 100; id++) mqttPacket.writeToStream({ cmd: "puback", messageId: id }, socket);
    await new Promise((resolve) => setTimeout(resolve, 100));
    expect(Buffer.concat(chunks).length).toBe(400);
    expect(chunks.length).toBe(1);
    client.destroy();
    socket.destroy();
  });

  it("resolves drained() at once while the socket takes writes, and when it closes", async () => {
    const { client, socket, outgoing } = await connectedPair({ maxBytes: 64 * 1024 * 1024, maxMessages: 1_000_000 });
    await outgoing.drained();
    client.pause();
    const payload = Buffer.alloc(64 * 1024, 0x61);
    while (!socket.writableNeedDrain) {
      writePublish(socket, payload);
      await tick();
    }
    let drained = false;
    const waiting = outgoing.drained().then(() => {
      drained = true;
    });
    await tick();
    expect(drained).toBe(false);
    socket.destroy();
    await waiting;
    client.destroy();
  });
});
