import assert from 'node:assert/strict';
import { test } from 'node:test';
import { findUnstorable, unstorable } from './storable-text.js';

test('unstorable: NUL and lone surrogates; pairs and other text are fine', () => {
  assert.equal(unstorable('plain, ünïcode, 😀'), undefined);
  assert.equal(unstorable('a\0b'), 'a NUL character');
  assert.equal(unstorable('x\ud800'), 'a lone UTF-16 surrogate (half of a character)');
  assert.equal(unstorable('\udc00y'), 'a lone UTF-16 surrogate (half of a character)');
  assert.equal(unstorable('\ud83d\ude00'), undefined);
});

test('findUnstorable: names the value or key, at any depth', () => {
  assert.equal(
    findUnstorable({ a: ['ok', { b: 'x\ud800' }] }),
    '$.a[1].b holds a lone UTF-16 surrogate (half of a character)',
  );
  assert.equal(findUnstorable({ 'k\0': 1 }), 'a key of $ holds a NUL character');
  assert.equal(findUnstorable({ a: 1, b: [true, null, 'fine'] }), undefined);
  // Deeper than the call stack: still answered, with a bounded path.
  let deep: unknown = 'end\0';
  for (let i = 0; i < 200_000; i++) deep = [deep];
  const found = findUnstorable(deep) ?? '';
  assert.match(found, /^\$(\[0\])+ holds a NUL character$/);
  assert.ok(found.length < 300, found);
});
