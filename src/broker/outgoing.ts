import type { Duplex } from "node:stream";
import { type Frame, FrameScanner, PUBLISH } from "./framing.ts";

export interface OutgoingLimits {
  /** Bytes waiting to be written to the socket, past which the connection is cut. */
  maxBytes: number;
  /** PUBLISH packets waiting to be written to the socket, past which the connection is cut. */
  maxMessages: number;
}

const byConnection = new WeakMap<Duplex, Outgoing>();

/**
 * The write side of an MQTT connection as the broker uses it.
 *
 * Aedes waits for a full socket to drain before it lets the message go, and while it waits the
 * message holds one of the emitter's shared routing slots: a few subscribers that stop reading hold
 * them all, every other client's messages queue behind (in one process-wide queue, which mqemitter
 * drains by recursion and, past some ten thousand messages, by a stack overflow that ends the
 * process). So here a write never makes the broker wait: what the socket cannot take yet waits in
 * its buffer, bounded per connection in bytes and in messages, and a connection over either bound
 * is cut. Writes made in one tick are corked together, so the acknowledgements released by one
 * durable batch leave in one system call.
 */
export class Outgoing {
  private readonly scanner = new FrameScanner();
  /** Bytes handed to the connection so far. */
  private written = 0;
  /** Stream offsets at which the PUBLISH packets handed over end, oldest first, from `flushed` on. */
  private publishEnds: number[] = [];
  private flushed = 0;
  private cut = false;

  private constructor(
    private readonly connection: Duplex,
    private readonly limits: OutgoingLimits,
    private readonly onOverflow: (waiting: { bytes: number; messages: number }) => void,
  ) {
    const write = connection.write.bind(connection) as (chunk: unknown, ...rest: unknown[]) => boolean;
    let corked = false;
    const uncork = () => {
      corked = false;
      connection.uncork();
    };
    const recordPublish = (frame: Frame) => {
      if (frame.type === PUBLISH) this.publishEnds.push(frame.start + frame.size);
      return true;
    };
    connection.write = ((chunk: Buffer | string, ...rest: unknown[]) => {
      if (!corked) {
        corked = true;
        connection.cork();
        process.nextTick(uncork);
      }
      const bytes = typeof chunk === "string" ? Buffer.byteLength(chunk) : chunk.length;
      // Strings are topics and payloads, inside a packet's body: no need to look at them.
      if (typeof chunk !== "string" || !this.scanner.skipBody(bytes)) {
        this.scanner.scan(typeof chunk === "string" ? Buffer.from(chunk) : chunk, recordPublish);
      }
      this.written += bytes;
      write(chunk, ...rest);
      this.enforce();
      return true;
    }) as Duplex["write"];
  }

  /** Bounds what waits to be written to `connection`; `onOverflow` is told before it is cut. */
  static attach(
    connection: Duplex,
    limits: OutgoingLimits,
    onOverflow: (waiting: { bytes: number; messages: number }) => void,
  ): Outgoing {
    const outgoing = new Outgoing(connection, limits, onOverflow);
    byConnection.set(connection, outgoing);
    return outgoing;
  }

  static of(connection: Duplex): Outgoing | undefined {
    return byConnection.get(connection);
  }

  /** PUBLISH packets handed over whose last byte has not left this process yet. */
  get waitingMessages(): number {
    const sent = this.written - this.connection.writableLength;
    while (this.flushed < this.publishEnds.length && (this.publishEnds[this.flushed] as number) <= sent) {
      this.flushed++;
    }
    if (this.flushed > 1024 && this.flushed * 2 > this.publishEnds.length) {
      this.publishEnds = this.publishEnds.slice(this.flushed);
      this.flushed = 0;
    }
    return this.publishEnds.length - this.flushed;
  }

  get waitingBytes(): number {
    return this.connection.writableLength;
  }

  /**
   * Resolves once the socket would take more without queueing it (at once if it would), or has
   * closed: for work that should go at the pace the client reads (retained messages).
   */
  drained(): Promise<void> {
    const { connection } = this;
    if (!connection.writableNeedDrain || connection.destroyed) return Promise.resolve();
    return new Promise((resolve) => {
      const done = () => {
        connection.off("drain", done);
        connection.off("close", done);
        resolve();
      };
      connection.on("drain", done);
      connection.on("close", done);
    });
  }

  private enforce(): void {
    if (this.cut) return;
    const bytes = this.waitingBytes;
    const messages = this.waitingMessages;
    if (bytes <= this.limits.maxBytes && messages <= this.limits.maxMessages) return;
    this.cut = true;
    this.onOverflow({ bytes, messages });
    this.connection.destroy();
  }
}
