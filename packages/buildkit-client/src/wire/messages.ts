import { ProtoWriter, readFields } from './protobuf.js';

/** fsutil.types.Packet.PacketType */
export const PacketType = { STAT: 0, REQ: 1, DATA: 2, FIN: 3, ERR: 4 } as const;
export type PacketType = (typeof PacketType)[keyof typeof PacketType];

/** fsutil.types.Stat */
export interface Stat {
  path: string;
  mode: number;
  uid: number;
  gid: number;
  size: number;
  modTime: bigint;
  linkname: string;
  devmajor: number;
  devminor: number;
  xattrs?: Readonly<Record<string, Buffer>>;
}

export interface Packet {
  type: PacketType;
  stat?: Stat;
  id: number;
  data?: Buffer;
}

export function encodeStat(s: Stat): Buffer {
  const w = new ProtoWriter()
    .string(1, s.path)
    .uint32(2, s.mode)
    .uint32(3, s.uid)
    .uint32(4, s.gid)
    .int64(5, s.size)
    .int64(6, s.modTime)
    .string(7, s.linkname)
    .int64(8, s.devmajor)
    .int64(9, s.devminor);
  // Deterministic (sorted) map order, as fsutil marshals it: stats are compared across rebuilds.
  for (const key of Object.keys(s.xattrs ?? {}).sort()) {
    const entry = new ProtoWriter()
      .string(1, key)
      .bytes(2, (s.xattrs as Record<string, Buffer>)[key] as Buffer)
      .finish();
    w.bytes(10, entry, true);
  }
  return w.finish();
}

export function decodeStat(buf: Buffer): Stat {
  const s: Stat = {
    path: '',
    mode: 0,
    uid: 0,
    gid: 0,
    size: 0,
    modTime: 0n,
    linkname: '',
    devmajor: 0,
    devminor: 0,
  };
  for (const f of readFields(buf)) {
    switch (f.field) {
      case 1:
        s.path = f.bytes?.toString('utf8') ?? '';
        break;
      case 2:
        s.mode = Number(BigInt.asUintN(32, f.varint ?? 0n));
        break;
      case 3:
        s.uid = Number(BigInt.asUintN(32, f.varint ?? 0n));
        break;
      case 4:
        s.gid = Number(BigInt.asUintN(32, f.varint ?? 0n));
        break;
      case 5:
        s.size = Number(BigInt.asIntN(64, f.varint ?? 0n));
        break;
      case 6:
        s.modTime = BigInt.asIntN(64, f.varint ?? 0n);
        break;
      case 7:
        s.linkname = f.bytes?.toString('utf8') ?? '';
        break;
      case 8:
        s.devmajor = Number(BigInt.asIntN(64, f.varint ?? 0n));
        break;
      case 9:
        s.devminor = Number(BigInt.asIntN(64, f.varint ?? 0n));
        break;
      case 10: {
        let key = '';
        let value = Buffer.alloc(0);
        for (const e of readFields(f.bytes ?? Buffer.alloc(0))) {
          if (e.field === 1) key = e.bytes?.toString('utf8') ?? '';
          else if (e.field === 2) value = Buffer.from(e.bytes ?? Buffer.alloc(0));
        }
        s.xattrs = { ...s.xattrs, [key]: value };
        break;
      }
    }
  }
  return s;
}

export function encodePacket(p: Packet): Buffer {
  return new ProtoWriter()
    .uint32(1, p.type)
    .message(2, p.stat === undefined ? undefined : encodeStat(p.stat))
    .uint32(3, p.id)
    .bytes(4, p.data ?? Buffer.alloc(0))
    .finish();
}

/** Room a DATA packet's header needs in front of its bytes: three tags and three varints. */
export const DATA_HEADER_ROOM = 16;

/**
 * A DATA packet around bytes already in place: `buf` holds `length` bytes at
 * DATA_HEADER_ROOM, and the header is written just before them. The same bytes as
 * encodePacket's, without copying the contents into a new message.
 */
export function dataPacketInPlace(buf: Buffer, id: number, length: number): Buffer {
  let start = DATA_HEADER_ROOM;
  // Varints are written backwards, so each goes just before what follows it.
  const varintBefore = (value: number) => {
    let n = 1;
    for (let v = value >>> 7; v > 0; v >>>= 7) n++;
    start -= n;
    let v = value;
    for (let i = 0; i < n; i++) {
      buf[start + i] = (v & 0x7f) | (i < n - 1 ? 0x80 : 0);
      v >>>= 7;
    }
  };
  if (length > 0) {
    varintBefore(length);
    buf[--start] = (4 << 3) | 2;
  }
  if (id !== 0) {
    varintBefore(id);
    buf[--start] = 3 << 3;
  }
  buf[--start] = PacketType.DATA;
  buf[--start] = 1 << 3;
  return buf.subarray(start, DATA_HEADER_ROOM + length);
}

export function decodePacket(buf: Buffer): Packet {
  const p: Packet = { type: PacketType.STAT, id: 0 };
  for (const f of readFields(buf)) {
    if (f.field === 1) p.type = Number(f.varint ?? 0n) as PacketType;
    else if (f.field === 2) p.stat = decodeStat(f.bytes ?? Buffer.alloc(0));
    else if (f.field === 3) p.id = Number(BigInt.asUintN(32, f.varint ?? 0n));
    else if (f.field === 4) p.data = f.bytes;
  }
  return p;
}

/** moby.buildkit.v1.BytesMessage / moby.filesync.v1.BytesMessage (field 1: data). */
export function decodeBytesMessage(buf: Buffer): Buffer {
  let data: Buffer = Buffer.alloc(0);
  for (const f of readFields(buf)) if (f.field === 1 && f.bytes) data = f.bytes;
  return data;
}

/** grpc.health.v1.HealthCheckResponse{status: SERVING} */
export const HEALTH_SERVING = new ProtoWriter().uint32(1, 1).finish();

/** moby.buildkit.secrets.v1.GetSecretRequest */
export interface GetSecretRequest {
  id: string;
  annotations: Record<string, string>;
}

export function decodeGetSecretRequest(buf: Buffer): GetSecretRequest {
  const req: GetSecretRequest = { id: '', annotations: {} };
  for (const f of readFields(buf)) {
    if (f.field === 1) req.id = f.bytes?.toString('utf8') ?? '';
    else if (f.field === 2) {
      let key = '';
      let value = '';
      for (const e of readFields(f.bytes ?? Buffer.alloc(0))) {
        if (e.field === 1) key = e.bytes?.toString('utf8') ?? '';
        else if (e.field === 2) value = e.bytes?.toString('utf8') ?? '';
      }
      // A map built from the wire must not let a key such as __proto__ reach the prototype.
      Object.defineProperty(req.annotations, key, { value, enumerable: true, writable: true });
    }
  }
  return req;
}

/** moby.buildkit.secrets.v1.GetSecretResponse{data} */
export function encodeGetSecretResponse(data: Buffer): Buffer {
  return new ProtoWriter().bytes(1, data).finish();
}

/** moby.filesync.v1.CredentialsRequest{Host}: the registry host BuildKit is about to talk to. */
export function decodeCredentialsRequest(buf: Buffer): { host: string } {
  let host = '';
  for (const f of readFields(buf)) if (f.field === 1) host = f.bytes?.toString('utf8') ?? '';
  return { host };
}

/** moby.filesync.v1.CredentialsResponse{Username, Secret}; both empty means anonymous. */
export function encodeCredentialsResponse(username: string, secret: string): Buffer {
  return new ProtoWriter().string(1, username).string(2, secret).finish();
}
