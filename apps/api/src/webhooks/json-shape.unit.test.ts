import assert from 'node:assert/strict';
import { test } from 'node:test';
import { isAppError } from '@kiln/core';
import { checkJsonShape } from './json-shape.js';

const limits = { maxDepth: 4, maxContainers: 6 };
const refused = (pattern: RegExp) => (err: unknown) =>
  isAppError(err) && err.code === 'invalid_request' && pattern.test(err.message);

test('within the limits: passes, whatever brackets its strings hold', () => {
  checkJsonShape('{"a":[{"b":[1]}]}', limits);
  checkJsonShape('{"a":"[[[[[[[[{{{{{{","b":"\\"[[[[[[\\\\"}', limits);
  checkJsonShape('[[],[],{}]', limits);
  checkJsonShape('"just a string"', limits);
});

test('nested past the depth: refused, however few containers in all', () => {
  assert.throws(() => checkJsonShape('[[[[[]]]]]', limits), refused(/nests deeper than 4 levels/));
  // A string's escaped quote does not end it: the brackets after it are still inside.
  checkJsonShape('["\\"[[[[[[["]', limits);
  assert.throws(() => checkJsonShape('["\\\\"[[[[[]]]]]]', limits), refused(/deeper than 4/));
});

test('more containers than allowed: refused, however shallow', () => {
  checkJsonShape('[[],[],[],[],[]]', limits);
  assert.throws(
    () => checkJsonShape('[[],[],[],[],[],[]]', limits),
    refused(/more than 6 objects and arrays/),
  );
});

test('a text of millions of brackets ends (no backtracking, one pass)', () => {
  const deep = '['.repeat(5_000_000);
  assert.throws(() => checkJsonShape(deep, { maxDepth: 32, maxContainers: 100_000 }), refused(/deeper/));
  const flat = `[${'[],'.repeat(1_000_000)}[]]`;
  assert.throws(() => checkJsonShape(flat, { maxDepth: 32, maxContainers: 100_000 }), refused(/more than/));
});
