import mqttPacket from "mqtt-packet";
import { describe, expect, it } from "vitest";
import { PacketSizeScanner } from "../../src/broker/packet-size-guard.ts";

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
