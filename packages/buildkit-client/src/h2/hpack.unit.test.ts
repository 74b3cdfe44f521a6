import assert from 'node:assert/strict';
import { test } from 'node:test';
import { encodeHeaders, HpackDecoder, HpackError, huffmanDecode } from './hpack.js';

const hex = (s: string) => Buffer.from(s.replace(/\s+/g, ''), 'hex');

test('RFC 7541 C.4: three requests with Huffman strings share one dynamic table', () => {
  const d = new HpackDecoder();
  assert.deepEqual(d.decode(hex('8286 8441 8cf1 e3c2 e5f2 3a6b a0ab 90f4 ff')), [
    [':method', 'GET'],
    [':scheme', 'http'],
    [':path', '/'],
    [':authority', 'www.example.com'],
  ]);
  assert.deepEqual(d.decode(hex('8286 84be 5886 a8eb 1064 9cbf')), [
    [':method', 'GET'],
    [':scheme', 'http'],
    [':path', '/'],
    [':authority', 'www.example.com'],
    ['cache-control', 'no-cache'],
  ]);
  assert.deepEqual(d.decode(hex('8287 85bf 4088 25a8 49e9 5ba9 7d7f 8925 a849 e95b b8e8 b4bf')), [
    [':method', 'GET'],
    [':scheme', 'https'],
    [':path', '/index.html'],
    [':authority', 'www.example.com'],
    ['custom-key', 'custom-value'],
  ]);
});

test('the Huffman code rebuilt from the lengths alone matches RFC 7541 at both ends of the table', () => {
  assert.deepEqual(huffmanDecode(hex('ffc7')), Buffer.from([0])); // 0x1ff8, 13 bits, then 3 bits of padding
  assert.deepEqual(huffmanDecode(hex('fffffbbf')), Buffer.from([255])); // 0x3ffffee, 26 bits
  assert.deepEqual(huffmanDecode(hex('fffffff3')), Buffer.from([10])); // 0x3ffffffc, 30 bits
  assert.equal(huffmanDecode(hex('f1e3c2e5f23a6ba0ab90f4ff')).toString(), 'www.example.com');
  assert.equal(huffmanDecode(hex('a8eb10649cbf')).toString(), 'no-cache');
});

test('Huffman strings with EOS, bad padding or a code that does not exist are refused', () => {
  assert.throws(() => huffmanDecode(hex('ffffffff')), HpackError); // EOS (30 ones) inside the string
  assert.throws(() => huffmanDecode(hex('00')), HpackError); // '0' (00000) then padding of zeros
  assert.throws(() => huffmanDecode(hex('f1e3c2e5f23a6ba0ab90f4ffff')), HpackError); // 8+ bits of padding
});

test('the dynamic table evicts the oldest entries and obeys size updates within the announced bound', () => {
  const d = new HpackDecoder(100);
  const literal = (name: string, value: string) =>
    Buffer.concat([
      Buffer.from([0x40, name.length]),
      Buffer.from(name),
      Buffer.from([value.length]),
      Buffer.from(value),
    ]);
  // Each entry is 32 + 2 + 8 = 42 bytes: two fit in 100, a third evicts the first.
  d.decode(Buffer.concat([literal('k1', 'v1aaaaaa'), literal('k2', 'v2aaaaaa'), literal('k3', 'v3aaaaaa')]));
  assert.deepEqual(d.decode(hex('be bf')), [
    ['k3', 'v3aaaaaa'],
    ['k2', 'v2aaaaaa'],
  ]);
  assert.throws(() => d.decode(hex('c0')), HpackError); // index 64: k1 is gone
  d.decode(hex('20')); // size update to 0 empties the table
  assert.throws(() => d.decode(hex('be')), HpackError);
  assert.throws(() => d.decode(hex('3f 46')), /bound/); // 31 + 70 = 101 > 100
});

test('truncated blocks, huge integers and oversized header lists are errors, never a hang', () => {
  const d = new HpackDecoder(4096, 64);
  assert.throws(() => d.decode(hex('41')), HpackError); // ends before the value
  assert.throws(() => d.decode(hex('0f')), HpackError); // ends inside an integer
  assert.throws(() => d.decode(hex('0f ff ff ff ff ff ff ff 7f')), /too large/);
  assert.throws(() => d.decode(hex('00 05 61')), /longer than/);
  assert.throws(() => d.decode(hex('80')), HpackError); // index 0
  const big = encodeHeaders([['x-long', 'v'.repeat(40)]]);
  assert.throws(() => d.decode(big), /header list too large/);
});

test('what the encoder writes decodes to the same list, long values included', () => {
  const list: Array<[string, string]> = [
    [':status', '200'],
    ['content-type', 'application/grpc'],
    ['grpc-message', 'x'.repeat(300)],
  ];
  assert.deepEqual(new HpackDecoder().decode(encodeHeaders(list)), list);
});
