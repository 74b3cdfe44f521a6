/**
 * gRPC framing of `moby.buildkit.v1.BytesMessage` (one `bytes data = 1` field), the message
 * `Control.Session` carries the session's bytes in. The tunnel needs only the bytes, not the
 * message boundaries, so incoming payloads are handed on as views of the HTTP/2 chunks they
 * arrived in, never gathered into a message first.
 */

/** The 5-byte gRPC prefix, the field's tag (1, length-delimited) and the payload's length. */
export function bytesMessageHeader(payloadLength: number): Buffer {
  const varint: number[] = [];
  let n = payloadLength;
  do {
    varint.push((n & 0x7f) | (n > 0x7f ? 0x80 : 0));
    n >>>= 7;
  } while (n > 0);
  // An empty BytesMessage encodes as no field at all.
  const body = payloadLength === 0 ? 0 : 1 + varint.length + payloadLength;
  const header = Buffer.allocUnsafe(payloadLength === 0 ? 5 : 6 + varint.length);
  header[0] = 0;
  header.writeUInt32BE(body, 1);
  if (payloadLength > 0) {
    header[5] = 0x0a;
    for (let i = 0; i < varint.length; i++) header[6 + i] = varint[i] as number;
  }
  return header;
}

export class BytesMessageFramingError extends Error {}

enum State {
  Prefix,
  Tag,
  Length,
  Payload,
}

/**
 * Reads gRPC-framed BytesMessages from a byte stream and yields their payloads as views of the
 * input. A message must be exactly the one field BuildKit sends; anything else (compression,
 * another field, a length that disagrees with the frame) is an error, never guessed at.
 */
export class BytesMessageDeframer {
  private state = State.Prefix;
  private readonly prefix = Buffer.alloc(5);
  private prefixFill = 0;
  /** Bytes of the current message's body not read yet. */
  private bodyLeft = 0;
  private length = 0;
  private lengthShift = 0;
  private payloadLeft = 0;

  constructor(private readonly maxMessageBytes: number) {}

  /** Payload pieces in `chunk`, in order (views of it). */
  *payloads(chunk: Buffer): Generator<Buffer> {
    let pos = 0;
    while (pos < chunk.length) {
      switch (this.state) {
        case State.Prefix: {
          const n = Math.min(5 - this.prefixFill, chunk.length - pos);
          chunk.copy(this.prefix, this.prefixFill, pos, pos + n);
          this.prefixFill += n;
          pos += n;
          if (this.prefixFill < 5) break;
          this.prefixFill = 0;
          if (this.prefix[0] !== 0)
            throw new BytesMessageFramingError('compressed gRPC message on the session stream');
          this.bodyLeft = this.prefix.readUInt32BE(1);
          if (this.bodyLeft > this.maxMessageBytes) {
            throw new BytesMessageFramingError(
              `session message of ${this.bodyLeft} bytes exceeds the limit of ${this.maxMessageBytes}`,
            );
          }
          if (this.bodyLeft > 0) this.state = State.Tag;
          break;
        }
        case State.Tag:
          // The tag and at least one byte of length: a shorter body would run into the next frame.
          if (chunk[pos] !== 0x0a || this.bodyLeft < 2)
            throw new BytesMessageFramingError(
              `unexpected field tag ${chunk[pos]} in a ${this.bodyLeft}-byte BytesMessage`,
            );
          pos++;
          this.bodyLeft--;
          this.length = 0;
          this.lengthShift = 0;
          this.state = State.Length;
          break;
        case State.Length: {
          const b = chunk[pos++] as number;
          this.bodyLeft--;
          if (this.lengthShift > 28)
            throw new BytesMessageFramingError('BytesMessage length varint too long');
          this.length += (b & 0x7f) * 2 ** this.lengthShift;
          this.lengthShift += 7;
          if (b & 0x80) {
            if (this.bodyLeft === 0)
              throw new BytesMessageFramingError('BytesMessage length runs past its frame');
            break;
          }
          if (this.length !== this.bodyLeft) {
            throw new BytesMessageFramingError(
              `BytesMessage of ${this.length} payload bytes in a body with ${this.bodyLeft} left`,
            );
          }
          this.payloadLeft = this.length;
          this.state = this.payloadLeft > 0 ? State.Payload : State.Prefix;
          break;
        }
        case State.Payload: {
          const n = Math.min(this.payloadLeft, chunk.length - pos);
          yield chunk.subarray(pos, pos + n);
          pos += n;
          this.payloadLeft -= n;
          if (this.payloadLeft === 0) this.state = State.Prefix;
          break;
        }
      }
    }
  }

  /** Whether the stream may end here (between messages). */
  get atBoundary(): boolean {
    return this.state === State.Prefix && this.prefixFill === 0;
  }
}
