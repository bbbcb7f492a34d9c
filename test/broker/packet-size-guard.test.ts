import { once } from "node:events";
import mqttPacket from "mqtt-packet";
import { describe, expect, it } from "vitest";
import { type Frame, FrameScanner } from "../../src/broker/framing.ts";
import { guardPacketSize } from "../../src/broker/packet-size-guard.ts";
import { tcpPair } from "../helpers/tcp.ts";

const publish = (payloadBytes: number) =>
  mqttPacket.generate({
    cmd: "publish",
    topic: "t",
    payload: Buffer.alloc(payloadBytes),
    qos: 0,
    retain: false,
    dup: false,
  });

/** Whether every frame of the scanned bytes is at most `max` bytes. */
const within = (max: number) => (frame: Frame) => frame.size <= max;

describe("FrameScanner", () => {
  it("passes packets up to the limit, however the stream is split", () => {
    const stream = Buffer.concat([publish(10), publish(200), publish(1000 - 6)]);
    expect(publish(1000 - 6).length).toBe(1000);
    for (const size of [1, 2, 3, 7, stream.length]) {
      const scanner = new FrameScanner();
      for (let i = 0; i < stream.length; i += size) {
        expect(scanner.scan(stream.subarray(i, i + size), within(1000))).toBe(true);
      }
    }
  });

  it("refuses a packet over the limit as soon as its length is read", () => {
    const big = publish(5000);
    const scanner = new FrameScanner();
    expect(scanner.scan(publish(10), within(1000))).toBe(true);
    // Type byte and two length bytes: the body has not arrived yet.
    expect(scanner.scan(big.subarray(0, 3), within(1000))).toBe(false);
  });

  it("refuses a remaining length longer than four bytes", () => {
    expect(new FrameScanner().scan(Buffer.from([0x30, 0xff, 0xff, 0xff, 0xff]), () => true)).toBe(false);
  });

  it("reports each packet's type, start and size in the stream", () => {
    const ack = mqttPacket.generate({ cmd: "puback", messageId: 7 });
    const stream = Buffer.concat([publish(10), ack, publish(20)]);
    const frames: Frame[] = [];
    const scanner = new FrameScanner();
    for (let i = 0; i < stream.length; i += 5) {
      scanner.scan(stream.subarray(i, i + 5), (frame) => frames.push(frame) > 0);
    }
    expect(frames).toEqual([
      { type: 3, start: 0, size: publish(10).length },
      { type: 4, start: publish(10).length, size: 4 },
      { type: 3, start: publish(10).length + 4, size: publish(20).length },
    ]);
  });
});

describe("guardPacketSize", () => {
  /** A real TCP connection: the server side guarded and read as Aedes reads it, the client side to write with. */
  async function connectedPair(maxPacketBytes: number) {
    const { client, socket } = await tcpPair();
    let tooLarge = false;
    guardPacketSize(socket, maxPacketBytes, () => {
      tooLarge = true;
    });
    return { client, socket, tooLarge: () => tooLarge };
  }

  it("passes on, untouched, what a cleanly closed connection sent to a reader that was busy meanwhile", async () => {
    const { client, socket } = await connectedPair(1000);
    const sent = Buffer.concat(Array.from({ length: 100 }, () => publish(50)));
    client.end(sent);
    // Nobody reads until the client has long finished, as when the broker is still waiting for
    // earlier publishes to become durable.
    await once(client, "finish");
    await new Promise((resolve) => setTimeout(resolve, 100));
    const received: Buffer[] = [];
    for await (const chunk of socket) received.push(chunk as Buffer);
    expect(Buffer.concat(received).equals(sent)).toBe(true);
  });

  it("drops the connection when a packet over the limit is announced, before its body is read", async () => {
    const { client, socket, tooLarge } = await connectedPair(1000);
    const received: Buffer[] = [];
    socket.on("readable", () => {
      for (let chunk = socket.read(); chunk !== null; chunk = socket.read()) received.push(chunk);
    });
    client.on("error", () => undefined);
    client.write(Buffer.concat([publish(10), publish(5000).subarray(0, 3)]));
    await once(socket, "close");
    expect(tooLarge()).toBe(true);
    expect(received).toEqual([]);
    client.destroy();
  });
});
