import assert from 'node:assert/strict';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';
import protobuf from 'protobufjs';
import {
  DATA_HEADER_ROOM,
  dataPacketInPlace,
  decodeBytesMessage,
  decodeGetSecretRequest,
  decodePacket,
  encodeGetSecretResponse,
  encodePacket,
  PacketType,
  type Stat,
} from './messages.js';
import { ProtoWriter } from './protobuf.js';

const root = protobuf.loadSync(
  fileURLToPath(new URL('../../proto/fsutil/types/wire.proto', import.meta.url)),
);
const PacketProto = root.lookupType('fsutil.types.Packet');

const stat: Stat = {
  path: 'sub/dir/ä file',
  mode: ((1 << 31) | 0o755) >>> 0,
  uid: 1000,
  gid: 4294967294,
  size: 52_428_800,
  modTime: 1_764_000_000_123_456_789n,
  linkname: '../target',
  devmajor: 0,
  devminor: 7,
  xattrs: { 'user.b': Buffer.from('2'), 'user.a': Buffer.from([0, 1]) },
};

test('hand-written Packet codec matches the vendored proto (protobufjs) both ways', () => {
  const packet = { type: PacketType.DATA, id: 42, stat, data: Buffer.from('hello') };
  const ours = encodePacket(packet);
  const theirs = PacketProto.decode(ours) as unknown as {
    type: number;
    ID: number;
    data: Buffer;
    stat: {
      path: string;
      mode: number;
      modTime: { toString(): string };
      gid: number;
      xattrs: Record<string, Buffer>;
    };
  };
  assert.equal(theirs.type, PacketType.DATA);
  assert.equal(theirs.ID, 42);
  assert.equal(theirs.stat.path, stat.path);
  assert.equal(theirs.stat.mode, stat.mode);
  assert.equal(theirs.stat.gid, stat.gid);
  assert.equal(theirs.stat.modTime.toString(), stat.modTime.toString());
  assert.deepEqual(Object.keys(theirs.stat.xattrs).sort(), ['user.a', 'user.b']);

  const encodedByProtobufjs = Buffer.from(
    PacketProto.encode(
      PacketProto.fromObject({
        type: 2,
        ID: 42,
        data: Buffer.from('hello'),
        stat: { ...stat, modTime: stat.modTime.toString() },
      }),
    ).finish(),
  );
  assert.deepEqual(decodePacket(encodedByProtobufjs), packet);
});

test('empty STAT packet (end of stats) encodes to zero bytes and decodes without stat', () => {
  const buf = encodePacket({ type: PacketType.STAT, id: 0 });
  assert.equal(buf.length, 0);
  assert.deepEqual(decodePacket(buf), { type: PacketType.STAT, id: 0 });
});

test('BytesMessage round trip keeps bytes and ignores unknown fields', () => {
  const data = Buffer.alloc(300_000, 7);
  const enc = new ProtoWriter().bytes(1, data).finish();
  assert.deepEqual(decodeBytesMessage(enc), data);
  const withId = Buffer.concat([enc, Buffer.from([0x12, 0x02, 0x68, 0x69])]); // field 2 "hi"
  assert.deepEqual(decodeBytesMessage(withId), data);
});

test('secrets codec matches the vendored secrets.proto (protobufjs) both ways', () => {
  const secrets = protobuf.loadSync(
    fileURLToPath(new URL('../../proto/moby/buildkit/secrets/v1/secrets.proto', import.meta.url)),
  );
  const Request = secrets.lookupType('moby.buildkit.secrets.v1.GetSecretRequest');
  const Response = secrets.lookupType('moby.buildkit.secrets.v1.GetSecretResponse');
  const request = Buffer.from(
    Request.encode(Request.fromObject({ ID: 'npm_token', annotations: { a: '1', b: '' } })).finish(),
  );
  assert.deepEqual(decodeGetSecretRequest(request), { id: 'npm_token', annotations: { a: '1', b: '' } });
  const data = Buffer.from([0, 1, 2, 255]);
  const decoded = Response.decode(encodeGetSecretResponse(data)) as unknown as { data: Uint8Array };
  assert.deepEqual(Buffer.from(decoded.data), data);
});

test('a secret request annotation named __proto__ stays an own property', () => {
  const entry = Buffer.from([0x0a, 9, ...Buffer.from('__proto__'), 0x12, 1, 0x78]);
  const req = decodeGetSecretRequest(Buffer.concat([Buffer.from([0x12, entry.length]), entry]));
  assert.equal(Object.getPrototypeOf(req.annotations), Object.prototype);
  assert.equal(Object.getOwnPropertyDescriptor(req.annotations, '__proto__')?.value, 'x');
});

test('ProtoWriter writes varints, strings and bytes as protobufjs does', () => {
  const int64s: Array<bigint | number> = [
    1,
    127,
    128,
    2 ** 32 - 1,
    2 ** 32,
    2 ** 53 - 1,
    -1,
    -(2 ** 40),
    2n ** 63n - 1n,
    -(2n ** 63n),
    1_764_000_000_123_456_789n,
  ];
  const uint32s = [1, 127, 128, 300, 2 ** 31, 2 ** 32 - 1];
  // Past the writer's first buffer, so that it grows mid-message.
  const big = Buffer.alloc(300_000, 7);
  const text = 'ä/日本/🙂 '.repeat(40);

  const ours = new ProtoWriter();
  const theirs = protobuf.Writer.create();
  for (const v of int64s) {
    ours.int64(5, v);
    theirs.uint32((5 << 3) | 0).int64(String(v));
  }
  for (const v of uint32s) {
    ours.uint32(2, v);
    theirs.uint32((2 << 3) | 0).uint32(v);
  }
  ours.string(7, text).bytes(4, big).message(9, Buffer.alloc(0));
  theirs
    .uint32((7 << 3) | 2)
    .string(text)
    .uint32((4 << 3) | 2)
    .bytes(big)
    .uint32((9 << 3) | 2)
    .bytes(Buffer.alloc(0));
  assert.deepEqual(ours.finish(), Buffer.from(theirs.finish()));
});

test('a DATA packet built around bytes in place is the same as encodePacket makes', () => {
  for (const id of [0, 1, 127, 128, 16_384, 2 ** 31 - 1, 2 ** 32 - 1]) {
    for (const length of [1, 127, 128, 25_000, 1024 * 1024]) {
      const data = Buffer.alloc(length, id % 251);
      const buf = Buffer.alloc(DATA_HEADER_ROOM + length, 0xee);
      data.copy(buf, DATA_HEADER_ROOM);
      const packet = dataPacketInPlace(buf, id, length);
      assert.ok(
        encodePacket({ type: PacketType.DATA, id, data }).equals(packet),
        `id ${id}, ${length} bytes`,
      );
      assert.equal(packet.buffer, buf.buffer, 'no copy');
    }
  }
});
