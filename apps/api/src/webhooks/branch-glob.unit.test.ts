import assert from 'node:assert/strict';
import { test } from 'node:test';
import { branchMatches } from './branch-glob.js';

test('branch globs: * within a segment, ** across, the rest literal', () => {
  assert.ok(branchMatches('main', 'main'));
  assert.ok(!branchMatches('main', 'main2'));
  assert.ok(branchMatches('release/*', 'release/1.0'));
  assert.ok(!branchMatches('release/*', 'release/1.0/hotfix'));
  assert.ok(branchMatches('release/**', 'release/1.0/hotfix'));
  assert.ok(branchMatches('**', 'any/thing'));
  assert.ok(branchMatches('v?.x', 'v1.x'));
  assert.ok(!branchMatches('v1.x', 'v1-x'));
  assert.ok(!branchMatches('a+b', 'aab'));
  assert.ok(branchMatches('(x)[y]', '(x)[y]'));
});
