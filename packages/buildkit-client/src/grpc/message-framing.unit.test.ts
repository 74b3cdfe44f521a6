import assert from 'node:assert/strict';
import { test } from 'node:test';
import { frameMessage, MessageDeframer } from './message-framing.js';

const messagesOf = (deframer: MessageDeframer, chunks: Buffer[]) =>
  chunks.flatMap((c) => [...deframer.messages(c)].map((m) => m.toString()));

test('messages come out whole however the stream is cut: within a chunk, across chunks, a byte a chunk', () => {
  const sent = ['one', '', 'x'.repeat(70_000), 'two'];
  const stream = Buffer.concat(sent.map((m) => frameMessage(Buffer.from(m))));
  assert.deepEqual(messagesOf(new MessageDeframer(1 << 20), [stream]), sent);
  for (const size of [1, 2, 5, 7, 4096, 16_384]) {
    const chunks: Buffer[] = [];
    for (let pos = 0; pos < stream.length; pos += size) chunks.push(stream.subarray(pos, pos + size));
    const deframer = new MessageDeframer(1 << 20);
    assert.deepEqual(messagesOf(deframer, chunks), sent, `chunks of ${size}`);
    assert.ok(deframer.atBoundary);
  }
});

test('a message gathered from chunks is a buffer of its own, not a view of them', () => {
  const deframer = new MessageDeframer(1 << 20);
  const stream = frameMessage(Buffer.from('abcdef'));
  const first = Buffer.from(stream.subarray(0, 7));
  assert.deepEqual([...deframer.messages(first)], []);
  const [message] = [...deframer.messages(Buffer.from(stream.subarray(7)))];
  first.fill(0);
  assert.equal(message?.toString(), 'abcdef');
});
