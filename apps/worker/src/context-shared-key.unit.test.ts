import assert from 'node:assert/strict';
import { test } from 'node:test';
import { contextSharedKey } from './context-shared-key.js';

const attrs = (entries: Record<string, Record<string, string>>) =>
  new Map(
    Object.entries(entries).map(([path, a]) => [
      path,
      Object.fromEntries(Object.entries(a).map(([k, v]) => [k, Buffer.from(v)])),
    ]),
  );

test('a context without extended attributes has the project key', () => {
  assert.equal(contextSharedKey('p1'), 'kiln-p1');
  assert.equal(contextSharedKey('p1', new Map()), 'kiln-p1');
});

test('one key per set of attributes, whatever order they were listed in', () => {
  const a = contextSharedKey('p1', attrs({ f: { 'user.a': '1', 'user.b': '2' }, d: { 'user.c': '3' } }));
  assert.match(a, /^kiln-p1-xattrs-[0-9a-f]{32}$/);
  assert.equal(
    a,
    contextSharedKey('p1', attrs({ d: { 'user.c': '3' }, f: { 'user.b': '2', 'user.a': '1' } })),
  );
  const others = [
    contextSharedKey('p2', attrs({ f: { 'user.a': '1', 'user.b': '2' }, d: { 'user.c': '3' } })),
    contextSharedKey('p1', attrs({ f: { 'user.a': '1', 'user.b': '2' }, d: { 'user.c': '4' } })),
    contextSharedKey('p1', attrs({ f: { 'user.a': '1', 'user.b': '2' } })),
    // The same bytes split differently between name and value, or between paths.
    contextSharedKey('p1', attrs({ f: { 'user.a': '12', 'user.b': '' }, d: { 'user.c': '3' } })),
    contextSharedKey('p1', attrs({ f: { 'user.a': '1' }, d: { 'user.b': '2', 'user.c': '3' } })),
  ];
  assert.equal(new Set([a, ...others]).size, others.length + 1);
});
