import assert from 'node:assert/strict';
import { test } from 'node:test';
import * as grpc from '@grpc/grpc-js';
import { readRepeated, readSingle } from './metadata.js';

/** Builds metadata the way grpc-js hands it to a handler: repeated headers joined by ", ". */
function md(headers: Record<string, string>): grpc.Metadata {
  return grpc.Metadata.fromHttp2Headers(headers);
}

test('old daemons: plain values, repeated headers joined with ", "', () => {
  const m = md({ 'dir-name': 'context', 'exclude-patterns': '**/*.log, !keep.log, node_modules' });
  assert.equal(readSingle(m, 'dir-name'), 'context');
  assert.deepEqual(readRepeated(m, 'exclude-patterns'), ['**/*.log', '!keep.log', 'node_modules']);
  assert.deepEqual(readRepeated(m, 'followpaths'), []);
});

test('newer daemons: URL-encoded values flagged by <key>-encoded, so commas inside values survive', () => {
  const m = md({
    'exclude-patterns': 'a%2Cb, dir+with+space%2F**, %E2%98%BA',
    'exclude-patterns-encoded': '1',
    'include-patterns': 'x%2Cy',
  });
  assert.deepEqual(readRepeated(m, 'exclude-patterns'), ['a,b', 'dir with space/**', '☺']);
  // Without the flag a value is taken as it is.
  assert.deepEqual(readRepeated(m, 'include-patterns'), ['x%2Cy']);
});
