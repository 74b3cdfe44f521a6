import assert from 'node:assert/strict';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';
import protobuf from 'protobufjs';
import {
  BytesMessageDeframer,
  BytesMessageFramingError,
  bytesMessageHeader,
} from './bytes-message-framing.js';

const BytesMessage = protobuf
  .loadSync(fileURLToPath(new URL('../../proto/moby/buildkit/v1/control.proto', import.meta.url)))
  .lookupType('moby.buildkit.v1.BytesMessage');

/** A gRPC frame of BytesMessage{data} as protobufjs encodes it. */
function reference(data: Buffer): Buffer {
  const body = Buffer.from(BytesMessage.encode(BytesMessage.create({ data })).finish());
  const prefix = Buffer.alloc(5);
  prefix.writeUInt32BE(body.length, 1);
  return Buffer.concat([prefix, body]);
}

const SIZES = [0, 1, 127, 128, 300, 16_383, 16_384, 32_768, 1024 * 1024];

test('the header plus the payload is the gRPC frame protobufjs encodes', () => {
  // Empty, Go sends no field (five bytes); protobufjs an empty one, which the deframer takes too.
  assert.deepEqual(bytesMessageHeader(0), Buffer.alloc(5));
  for (const n of SIZES.filter((size) => size > 0)) {
    const data = Buffer.alloc(n, n % 251);
    assert.deepEqual(Buffer.concat([bytesMessageHeader(n), data]), reference(data), `${n} bytes`);
  }
});

test('payloads come out whole and in order however the stream is cut', () => {
  const messages = [300, 0, 1, 128, 20_000, 0].map((n, i) => Buffer.alloc(n, i + 1));
  const stream = Buffer.concat(messages.map(reference));
  for (const cut of [1, 2, 3, 5, 6, 7, 13, 1000, stream.length]) {
    const deframer = new BytesMessageDeframer(1 << 20);
    const out: Buffer[] = [];
    for (let pos = 0; pos < stream.length; pos += cut) {
      for (const p of deframer.payloads(stream.subarray(pos, pos + cut))) out.push(p);
    }
    assert.deepEqual(Buffer.concat(out), Buffer.concat(messages), `cut every ${cut} bytes`);
    assert.ok(deframer.atBoundary);
  }
});

test('payloads are views of the input, not copies', () => {
  const frame = reference(Buffer.alloc(1000, 9));
  const [payload] = [...new BytesMessageDeframer(1 << 20).payloads(frame)];
  assert.equal(payload?.buffer, frame.buffer);
});

test('a stream cut inside a message is not at a boundary', () => {
  const frame = reference(Buffer.alloc(100, 1));
  for (const end of [1, 5, 6, 7, 50]) {
    const deframer = new BytesMessageDeframer(1 << 20);
    for (const _ of deframer.payloads(frame.subarray(0, end)));
    assert.equal(deframer.atBoundary, false, `cut at ${end}`);
  }
});

test('what BuildKit does not send is refused, never guessed at', () => {
  const refused = (bytes: number[] | Buffer, max = 1 << 20) =>
    assert.throws(
      () => [...new BytesMessageDeframer(max).payloads(Buffer.from(bytes))],
      BytesMessageFramingError,
    );
  refused([1, 0, 0, 0, 2, 0x0a, 0]); // compressed flag
  refused([0, 0, 0, 0, 2, 0x12, 0]); // field 2
  refused([0, 0, 0, 0, 4, 0x0a, 5, 1, 2]); // payload longer than the body
  refused([0, 0, 0, 0, 4, 0x0a, 1, 1, 2]); // body longer than the payload
  refused([0, 0, 0, 1, 0, 0x0a], 100); // a 256-byte body over a limit of 100
  refused([0, 0, 0, 0, 1, 0x0a, 0, 0, 0, 0, 0]); // a tag with no length in its frame
  refused([0, 0, 0, 0, 2, 0x0a, 0x80, 0, 0, 0, 0, 0]); // a length running into the next frame
  refused([0, 0, 0, 0, 8, 0x0a, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01]); // varint too long
});
