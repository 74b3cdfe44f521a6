// Minimal protobuf wire-format reader/writer for the session's data-plane messages.
// The session carries every byte of a context and of an export, so these messages
// skip protobufjs's object conversion and copy payloads at most once.

const WIRE_VARINT = 0;
const WIRE_I64 = 1;
const WIRE_LEN = 2;
const WIRE_I32 = 5;

export class ProtoWriter {
  private parts: Buffer[] = [];
  private head: number[] = [];

  private flushHead(): void {
    if (this.head.length > 0) {
      this.parts.push(Buffer.from(this.head));
      this.head = [];
    }
  }

  private varint(value: bigint | number): void {
    let v = BigInt.asUintN(64, BigInt(value));
    while (v > 0x7fn) {
      this.head.push(Number(v & 0x7fn) | 0x80);
      v >>= 7n;
    }
    this.head.push(Number(v));
  }

  private smallVarint(value: number): void {
    let v = value >>> 0;
    while (v > 0x7f) {
      this.head.push((v & 0x7f) | 0x80);
      v >>>= 7;
    }
    this.head.push(v);
  }

  uint32(field: number, value: number): this {
    if (value !== 0) {
      this.smallVarint((field << 3) | WIRE_VARINT);
      this.smallVarint(value);
    }
    return this;
  }

  int64(field: number, value: bigint | number): this {
    if (value !== 0 && value !== 0n) {
      this.smallVarint((field << 3) | WIRE_VARINT);
      if (typeof value === 'number' && value >= 0 && value <= 0xffffffff) this.smallVarint(value);
      else this.varint(value);
    }
    return this;
  }

  bytes(field: number, value: Buffer | Uint8Array, always = false): this {
    if (value.length > 0 || always) {
      this.smallVarint((field << 3) | WIRE_LEN);
      this.smallVarint(value.length);
      this.flushHead();
      this.parts.push(
        Buffer.isBuffer(value) ? value : Buffer.from(value.buffer, value.byteOffset, value.length),
      );
    }
    return this;
  }

  string(field: number, value: string): this {
    return value.length > 0 ? this.bytes(field, Buffer.from(value, 'utf8')) : this;
  }

  message(field: number, value: Buffer | undefined): this {
    return value === undefined ? this : this.bytes(field, value, true);
  }

  finish(): Buffer {
    this.flushHead();
    return this.parts.length === 1 ? (this.parts[0] as Buffer) : Buffer.concat(this.parts);
  }
}

export class ProtoDecodeError extends Error {
  readonly code = 'PROTO_DECODE';
}

export interface ProtoField {
  field: number;
  wire: number;
  /** Varint value (as bigint) for wire type 0; undefined otherwise. */
  varint?: bigint;
  /** Sub-slice of the input for length-delimited fields (no copy). */
  bytes?: Buffer;
}

/** Iterates the fields of one encoded message; length-delimited values are views into `buf`. */
export function* readFields(buf: Buffer): Generator<ProtoField> {
  let pos = 0;
  const readVarint = (): bigint => {
    let result = 0n;
    let shift = 0n;
    for (;;) {
      if (pos >= buf.length) throw new ProtoDecodeError('truncated varint');
      const b = buf[pos++] as number;
      result |= BigInt(b & 0x7f) << shift;
      if ((b & 0x80) === 0) return result;
      shift += 7n;
      if (shift > 63n) throw new ProtoDecodeError('varint too long');
    }
  };
  while (pos < buf.length) {
    const tag = Number(readVarint());
    const field = tag >>> 3;
    const wire = tag & 7;
    switch (wire) {
      case WIRE_VARINT:
        yield { field, wire, varint: readVarint() };
        break;
      case WIRE_LEN: {
        const len = Number(readVarint());
        if (pos + len > buf.length) throw new ProtoDecodeError('truncated length-delimited field');
        yield { field, wire, bytes: buf.subarray(pos, pos + len) };
        pos += len;
        break;
      }
      case WIRE_I64:
        pos += 8;
        break;
      case WIRE_I32:
        pos += 4;
        break;
      default:
        throw new ProtoDecodeError(`unsupported wire type ${wire}`);
    }
  }
}
