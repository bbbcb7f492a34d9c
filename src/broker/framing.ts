/** MQTT control packet type of PUBLISH (MQTT 3.1.1, 2.2.1). */
export const PUBLISH = 3;

/** One control packet as its fixed header announced it. */
export interface Frame {
  /** Control packet type (the first byte's high nibble). */
  type: number;
  /** Offset of the packet's first byte in the stream. */
  start: number;
  /** Whole packet: type byte, length bytes and body. */
  size: number;
}

/**
 * Follows MQTT framing on a byte stream (MQTT-2.2.3): reads each fixed header and skips the body,
 * so a packet is known from its first bytes, before its body arrives. Bytes are only looked at.
 */
export class FrameScanner {
  private position = 0;
  private skip = 0;
  private inHeader = false;
  private type = 0;
  private start = 0;
  private length = 0;
  private multiplier = 1;
  private lengthBytes = 0;

  /**
   * Scans the next bytes of the stream, calling `onFrame` for each header completed; stops and
   * returns false as soon as `onFrame` does, or at a remaining length longer than four bytes.
   */
  scan(chunk: Buffer, onFrame: (frame: Frame) => boolean): boolean {
    let i = 0;
    while (i < chunk.length) {
      if (this.skip > 0) {
        const step = Math.min(this.skip, chunk.length - i);
        this.skip -= step;
        i += step;
        continue;
      }
      if (!this.inHeader) {
        this.inHeader = true;
        this.type = (chunk[i] as number) >> 4;
        this.start = this.position + i;
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
      this.inHeader = false;
      this.skip = this.length;
      if (!onFrame({ type: this.type, start: this.start, size: 1 + this.lengthBytes + this.length })) return false;
    }
    this.position += chunk.length;
    return true;
  }

  /** Advances over `bytes` known to lie inside a packet body, without looking at them. */
  skipBody(bytes: number): boolean {
    if (bytes > this.skip) return false;
    this.skip -= bytes;
    this.position += bytes;
    return true;
  }
}
