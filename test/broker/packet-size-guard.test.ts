import { once } from "node:events";
import net, { type AddressInfo } from "node:net";
import mqttPacket from "mqtt-packet";
import { describe, expect, it } from "vitest";
import { guardPacketSize, PacketSizeScanner, PacketTooLargeError } from "../../src/broker/packet-size-guard.ts";

const publish = (payloadBytes: number) =>
  mqttPacket.generate({
    cmd: "publish",
    topic: "t",
    payload: Buffer.alloc(payloadBytes),
    qos: 0,
    retain: false,
    dup: false,
  });

describe("PacketSizeScanner", () => {
  it("passes packets up to the limit, however the stream is split", () => {
    const stream = Buffer.concat([publish(10), publish(200), publish(1000 - 6)]);
    expect(publish(1000 - 6).length).toBe(1000);
    for (const size of [1, 2, 3, 7, stream.length]) {
      const scanner = new PacketSizeScanner(1000);
      for (let i = 0; i < stream.length; i += size) {
        expect(scanner.scan(stream.subarray(i, i + size))).toBe(true);
      }
    }
  });

  it("refuses a packet over the limit as soon as its length is read", () => {
    const big = publish(5000);
    const scanner = new PacketSizeScanner(1000);
    expect(scanner.scan(publish(10))).toBe(true);
    // Type byte and two length bytes: the body has not arrived yet.
    expect(scanner.scan(big.subarray(0, 3))).toBe(false);
  });

  it("refuses a remaining length longer than four bytes", () => {
    expect(new PacketSizeScanner(1000).scan(Buffer.from([0x30, 0xff, 0xff, 0xff, 0xff]))).toBe(false);
  });
});

describe("guardPacketSize", () => {
  /** A real TCP connection: the server side wrapped by the guard, the client side to write with. */
  async function connectedPair(maxPacketBytes: number) {
    const server = net.createServer();
    server.listen(0, "127.0.0.1");
    await once(server, "listening");
    const client = net.connect((server.address() as AddressInfo).port, "127.0.0.1");
    const [socket] = (await once(server, "connection")) as [net.Socket];
    server.close();
    let tooLarge = false;
    const guarded = guardPacketSize(socket, maxPacketBytes, () => {
      tooLarge = true;
    });
    return { client, socket, guarded, tooLarge: () => tooLarge };
  }

  it("keeps what a cleanly closed connection sent for a reader that was busy when it closed", async () => {
    const { client, socket, guarded } = await connectedPair(1000);
    const sent = Buffer.concat(Array.from({ length: 100 }, () => publish(50)));
    client.end(sent);
    // Nobody reads the guarded stream until the connection is fully closed, as when the broker is
    // still waiting for earlier publishes to become durable.
    await once(socket, "close");
    const received: Buffer[] = [];
    for await (const chunk of guarded) received.push(chunk as Buffer);
    expect(Buffer.concat(received).equals(sent)).toBe(true);
  });

  it("drops the connection when a packet over the limit is announced", async () => {
    const { client, socket, guarded, tooLarge } = await connectedPair(1000);
    const failed = once(guarded, "error");
    client.on("error", () => undefined);
    client.write(publish(5000).subarray(0, 3));
    await once(socket, "close");
    const [error] = await failed;
    expect(error).toBeInstanceOf(PacketTooLargeError);
    expect(tooLarge()).toBe(true);
    client.destroy();
  });
});
