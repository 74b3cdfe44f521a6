import assert from 'node:assert/strict';
import { test } from 'node:test';
import { Metadata } from '../grpc/metadata.js';
import { readRepeated, readSingle } from './metadata.js';

/** Metadata as a handler gets it: one value per header as it came (an old daemon's repeated option joined by ", "). */
function md(headers: Record<string, string>): Metadata {
  const m = new Metadata();
  for (const [key, value] of Object.entries(headers)) m.add(key, value);
  return m;
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

test('a UTF-8 value (a path with non-ASCII letters) is read as it came', () => {
  const m = md({ followpaths: 'répertoire/é.txt', 'dir-name': 'contexte' });
  assert.deepEqual(readRepeated(m, 'followpaths'), ['répertoire/é.txt']);
});

test('metadata keeps what a handler may read and nothing that could change an object', () => {
  const m = new Metadata();
  m.add('X-Mixed-Case', 'a');
  m.add('x-mixed-case', 'b');
  m.add('not legal!', 'c');
  m.add('plain-bin', 'text is not bytes');
  m.add('data-bin', Buffer.from([1, 2]));
  m.add('__proto__', 'polluted?');
  assert.deepEqual(m.get('x-mixed-case'), ['a', 'b']);
  assert.deepEqual(m.get('not legal!'), []);
  assert.deepEqual(m.get('plain-bin'), []);
  const map = m.getMap();
  assert.equal(Object.getPrototypeOf(map), Object.prototype);
  assert.equal(Object.hasOwn(map, '__proto__'), true);
  assert.deepEqual(Object.keys(map), ['x-mixed-case', 'data-bin', '__proto__']);
});
