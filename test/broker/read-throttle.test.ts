import { once } from "node:events";
import { PassThrough } from "node:stream";
import { describe, expect, it } from "vitest";
import { ReadThrottle, TurnShare } from "../../src/broker/read-throttle.ts";
import { startTestApp } from "../helpers/app.ts";
import { connect, inbox } from "../helpers/mqtt.ts";
import { tcpPair } from "../helpers/tcp.ts";

/** A real TCP connection, read on the server side the way Aedes reads: `read()` on every `readable`. */
async function connectedPair() {
  const { client, socket } = await tcpPair();
  const throttle = ReadThrottle.attach(socket);
  const reads: { at: number; bytes: number }[] = [];
  socket.on("readable", () => {
    for (let chunk = socket.read(); chunk !== null; chunk = socket.read())
      reads.push({ at: Date.now(), bytes: chunk.length });
  });
  const received = () => reads.reduce((sum, read) => sum + read.bytes, 0);
  return { client, socket, throttle, reads, received };
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

describe("ReadThrottle", () => {
  it("reads nothing while held, then wakes the reader once the hold ends", async () => {
    const { client, throttle, reads, received } = await connectedPair();
    const held = Date.now();
    expect(throttle.holdFor(100)).toBe(100);
    client.write(Buffer.alloc(1000));
    await sleep(50);
    expect(received()).toBe(0);
    await sleep(100);
    expect(received()).toBe(1000);
    expect(reads[0]?.at).toBeGreaterThanOrEqual(held + 100);
    client.destroy();
  });

  it("extends a hold only when asked for longer, and says by how much", async () => {
    const { client, throttle } = await connectedPair();
    const now = Date.now();
    expect(throttle.holdFor(100, now)).toBe(100);
    expect(throttle.holdFor(50, now)).toBe(0);
    expect(throttle.holdFor(150, now)).toBe(50);
    client.destroy();
  });

  it("holds until a promise settles, then for as long as it says", async () => {
    const { client, throttle, received } = await connectedPair();
    let settle!: (ms: number) => void;
    const settled = new Promise<number>((resolve) => (settle = resolve));
    const held: number[] = [];
    throttle.holdWhile(settled, (ms) => held.push(ms));
    throttle.holdWhile(settled, (ms) => held.push(ms));
    client.write(Buffer.alloc(10));
    await sleep(60);
    expect(received()).toBe(0);
    settle(50);
    await sleep(20);
    expect(received()).toBe(0);
    await sleep(60);
    expect(received()).toBe(10);
    expect(held).toHaveLength(1);
    expect(held[0]).toBeGreaterThanOrEqual(100);
    client.destroy();
  });

  it("hands the reader at most 16 KiB a read and one read a turn, in order, losing nothing", async () => {
    const { client, socket } = await connectedPair();
    const sent = Buffer.from(Array.from({ length: 200_000 }, (_, i) => i % 251));
    const got: Buffer[] = [];
    let reentrant = 0;
    socket.removeAllListeners("readable");
    // As Aedes does when a read's packets are handled at once: it reads again from inside its handling.
    const read = () => {
      const chunk: Buffer | null = socket.read();
      if (chunk === null) return;
      got.push(chunk);
      if (socket.read() !== null) reentrant++;
    };
    socket.on("readable", read);
    client.end(sent);
    await once(socket, "end");
    expect(reentrant).toBe(0);
    expect(Math.max(...got.map((chunk) => chunk.length))).toBeLessThanOrEqual(16 * 1024);
    expect(Buffer.concat(got).equals(sent)).toBe(true);
  });
});

describe("ReadThrottle and the stream's own reads", () => {
  it("lets the stream's read(0) refills through: they take nothing, however much is buffered", () => {
    // Node itself calls read(0) to top its buffer up (maybeReadMore, resume); a slice handed to it
    // would be dropped on the floor, the bytes lost to the parser.
    const stream = new PassThrough();
    ReadThrottle.attach(stream);
    const sent = Buffer.from(Array.from({ length: 40_000 }, (_, i) => i % 251));
    stream.write(sent);
    const buffered = stream.readableLength;
    expect(buffered).toBe(sent.length);
    expect(stream.read(0)).toBeNull();
    expect(stream.readableLength).toBe(buffered);
  });
});

describe("TurnShare: one tenant's connections share each turn", () => {
  it("hands the tenant's connections 16 KiB a turn between them, in turns, each stream whole and in order", async () => {
    const share = new TurnShare(16 * 1024);
    const streams = [new PassThrough(), new PassThrough()];
    const sent = streams.map((_, i) => Buffer.from(Array.from({ length: 60_000 }, (_, j) => (j + i) % 251)));
    const got: Buffer[][] = streams.map(() => []);
    const order: number[] = [];
    let turn = 0;
    const perTurn = new Map<number, number>();
    let ended = 0;
    const tick = () => {
      turn++;
      if (ended < streams.length) setImmediate(tick);
    };
    setImmediate(tick);
    streams.forEach((stream, i) => {
      ReadThrottle.attach(stream).shareTurns(share);
      stream.on("readable", () => {
        for (let chunk = stream.read(); chunk !== null; chunk = stream.read()) {
          got[i]?.push(chunk);
          order.push(i);
          perTurn.set(turn, (perTurn.get(turn) ?? 0) + chunk.length);
        }
      });
      stream.on("end", () => ended++);
    });
    for (const [i, stream] of streams.entries()) stream.end(sent[i]);
    await Promise.all(streams.map((stream) => once(stream, "end")));
    for (const [i, bytes] of sent.entries()) expect(Buffer.concat(got[i] ?? []).equals(bytes)).toBe(true);
    // Neither connection is read to its end before the other is read at all.
    expect(order.indexOf(1)).toBeLessThan(order.lastIndexOf(0));
    expect(order.indexOf(0)).toBeLessThan(order.lastIndexOf(1));
    // The two together never take more than a turn's share (a turn of this count may straddle two of the share's).
    expect(Math.max(...perTurn.values())).toBeLessThanOrEqual(2 * 16 * 1024);
  });
});

describe("ReadThrottle under the broker", () => {
  it("acknowledges a publish larger than one read's slice, and the publishes after it", async () => {
    const t = await startTestApp("embedded");
    try {
      const client = await connect(`mqtt://127.0.0.1:${t.app.mqttPorts?.tcp}`, {
        username: "admin",
        password: t.adminToken,
      });
      const seen = inbox(client);
      await client.subscribeAsync("plain/big/#", { qos: 1 });
      // Aedes reads again only once a read's packets are handled: a slice ending inside a packet has none.
      await client.publishAsync("plain/big/1", Buffer.alloc(100_000, 1), { qos: 1 });
      await client.publishAsync("plain/big/2", "small", { qos: 1 });
      const got = await seen.waitFor(2);
      expect(got.map((m) => m.payload.length)).toEqual([100_000, 5]);
      await client.endAsync();
    } finally {
      await t.cleanup();
    }
  });
});
