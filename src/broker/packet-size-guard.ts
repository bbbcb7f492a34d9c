import { Duplex, Transform, type TransformCallback } from "node:stream";

export class PacketTooLargeError extends Error {
  override name = "PacketTooLargeError";
}

/**
 * Follows MQTT framing on a byte stream: reads each fixed header's remaining length (MQTT-2.2.3)
 * and skips the body, so a packet over the limit is refused from its first bytes instead of after
 * it has been buffered. Bytes pass through untouched.
 */
export class PacketSizeScanner {
  private skip = 0;
  private inHeader = false;
  private length = 0;
  private multiplier = 1;
  private lengthBytes = 0;

  constructor(private readonly maxPacketBytes: number) {}

  /** Returns false as soon as the stream announces a packet over the limit, or a malformed length. */
  scan(chunk: Buffer): boolean {
    let i = 0;
    while (i < chunk.length) {
      if (this.skip > 0) {
        const step = Math.min(this.skip, chunk.length - i);
        this.skip -= step;
        i += step;
        continue;
      }
      if (!this.inHeader) {
        // The first byte of a packet: its type and flags.
        this.inHeader = true;
        this.length = 0;
        this.multiplier = 1;
        this.lengthBytes = 0;
        i++;
        continue;
      }
      const byte = chunk[i++] as number;
      this.length += (byte & 0x7f) * this.multiplier;
      this.multiplier *= 128;
      this.lengthBytes++;
      if (byte & 0x80) {
        if (this.lengthBytes >= 4) return false;
        continue;
      }
      // Whole packet = type byte + length bytes + body.
      if (1 + this.lengthBytes + this.length > this.maxPacketBytes) return false;
      this.inHeader = false;
      this.skip = this.length;
    }
    return true;
  }
}

/**
 * Wraps a connection so that reading it stops, and the connection is destroyed, the moment a
 * packet over `maxPacketBytes` is announced.
 */
export function guardPacketSize(connection: Duplex, maxPacketBytes: number, onTooLarge: () => void): Duplex {
  const scanner = new PacketSizeScanner(maxPacketBytes);
  const inspected = new Transform({
    transform(chunk: Buffer, _encoding, callback: TransformCallback) {
      if (scanner.scan(chunk)) return callback(null, chunk);
      onTooLarge();
      connection.destroy();
      callback(new PacketTooLargeError(`a packet over ${maxPacketBytes} bytes`));
    },
  });
  connection.pipe(inspected);
  // After a clean end the pipe ends `inspected` once the broker has read what is buffered in it
  // (QoS 0 publishes sent just before a DISCONNECT); only an aborted connection drops the rest.
  connection.once("close", () => {
    if (!connection.readableEnded) inspected.destroy();
  });
  const guarded = Duplex.from({ readable: inspected, writable: connection });
  guarded.once("close", () => connection.destroy());
  return guarded;
}
