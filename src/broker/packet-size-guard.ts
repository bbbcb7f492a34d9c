import type { Duplex } from "node:stream";
import { FrameScanner } from "./framing.ts";

/**
 * Makes a connection refuse, from its first bytes, any packet whose fixed header announces more than
 * `maxPacketBytes`: the connection is destroyed before the broker reads (and buffers) the body.
 * Aedes has no such option. It looks at what the broker reads, so nothing is buffered in between.
 */
export function guardPacketSize(connection: Duplex, maxPacketBytes: number, onTooLarge: () => void): void {
  const scanner = new FrameScanner();
  const withinLimit = ({ size }: { size: number }) => size <= maxPacketBytes;
  const read = connection.read.bind(connection);
  connection.read = (size?: number) => {
    const chunk: Buffer | null = read(size);
    if (chunk === null || scanner.scan(chunk, withinLimit)) return chunk;
    onTooLarge();
    connection.destroy();
    return null;
  };
}
