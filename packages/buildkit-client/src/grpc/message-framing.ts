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

/** The first buffer a message spread over chunks is gathered into, unless the message is smaller. */
const GATHER_START_BYTES = 64 * 1024;

/**
 * Splits a stream body into gRPC messages: views of the input when a message lies within one
 * chunk; one spread over several is gathered into a buffer of its own, grown as it arrives (kept
 * as views, a message sent a byte a frame would be as many buffers).
 */
export class MessageDeframer {
  private readonly prefix = Buffer.alloc(5);
  private prefixFill = 0;
  private body: Buffer | undefined;
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
      const piece = chunk.subarray(pos, pos + n);
      pos += n;
      if (this.have === 0 && n === this.need) {
        this.need = -1;
        yield piece;
        continue;
      }
      this.gather(piece);
      if (this.have < this.need) return;
      const message = (this.body as Buffer).subarray(0, this.have);
      this.body = undefined;
      this.need = -1;
      yield message;
    }
  }

  /** Appends to the message in progress, growing its buffer by doubling up to its length. */
  private gather(piece: Buffer): void {
    const size = this.have + piece.length;
    if (!this.body || this.body.length < size) {
      const grown = Buffer.allocUnsafe(Math.min(this.need, Math.max(2 * size, GATHER_START_BYTES)));
      this.body?.copy(grown, 0, 0, this.have);
      this.body = grown;
    }
    piece.copy(this.body, this.have);
    this.have = size;
  }

  get atBoundary(): boolean {
    return this.need < 0 && this.prefixFill === 0;
  }

  /** Bytes of the message in progress received so far, its prefix included. */
  get partialBytes(): number {
    return this.need < 0 ? this.prefixFill : 5 + this.have;
  }
}
