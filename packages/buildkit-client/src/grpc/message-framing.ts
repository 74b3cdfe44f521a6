/**
 * gRPC's message framing: each message is a 5-byte prefix (a compression flag, which Kiln never
 * sets nor accepts, and a 4-byte big-endian length) and the message's bytes.
 */

/** The prefix of a message of `length` bytes, to send before it (no copy of the message). */
export function messagePrefix(length: number): Buffer {
  const prefix = Buffer.allocUnsafe(5);
  prefix[0] = 0;
  prefix.writeUInt32BE(length, 1);
  return prefix;
}

/** The prefix and `message` in one buffer. */
export function frameMessage(message: Buffer): Buffer {
  return Buffer.concat([messagePrefix(message.length), message]);
}

export class MessageTooLargeError extends Error {}

/** Splits a stream body into gRPC messages: views of the input when a message lies within one chunk. */
export class MessageDeframer {
  private readonly prefix = Buffer.alloc(5);
  private prefixFill = 0;
  private parts: Buffer[] = [];
  private need = -1;
  private have = 0;

  constructor(private readonly maxMessageBytes: number) {}

  *messages(chunk: Buffer): Generator<Buffer> {
    let pos = 0;
    while (pos < chunk.length || this.need === 0) {
      if (this.need < 0) {
        const n = Math.min(5 - this.prefixFill, chunk.length - pos);
        chunk.copy(this.prefix, this.prefixFill, pos, pos + n);
        this.prefixFill += n;
        pos += n;
        if (this.prefixFill < 5) return;
        this.prefixFill = 0;
        if (this.prefix[0] !== 0) throw new Error('compressed gRPC message (no compression was offered)');
        this.need = this.prefix.readUInt32BE(1);
        if (this.need > this.maxMessageBytes)
          throw new MessageTooLargeError(
            `message of ${this.need} bytes exceeds the limit of ${this.maxMessageBytes}`,
          );
        this.have = 0;
        continue;
      }
      const n = Math.min(this.need - this.have, chunk.length - pos);
      if (n > 0) this.parts.push(chunk.subarray(pos, pos + n));
      pos += n;
      this.have += n;
      if (this.have < this.need) return;
      const parts = this.parts;
      this.parts = [];
      this.need = -1;
      yield parts.length === 1 ? (parts[0] as Buffer) : Buffer.concat(parts, this.have);
    }
  }

  get atBoundary(): boolean {
    return this.need < 0 && this.prefixFill === 0;
  }

  /** Bytes of the message in progress received so far, its prefix included. */
  get partialBytes(): number {
    return this.need < 0 ? this.prefixFill : 5 + this.have;
  }
}
