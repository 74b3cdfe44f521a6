import assert from 'node:assert/strict';
import { test } from 'node:test';
import { contextSharedKey } from './context-shared-key.js';

const digest = (c: string) => `contexts/sha256/${c.repeat(64)}.tar`;

test('one key per project, stored context and Dockerfile', () => {
  const key = contextSharedKey('p1', digest('a'), 'Dockerfile');
  assert.match(key, /^kiln-p1-[0-9a-f]{32}$/);
  assert.equal(key, contextSharedKey('p1', digest('a'), 'Dockerfile'));
  const others = [
    contextSharedKey('p2', digest('a'), 'Dockerfile'),
    contextSharedKey('p1', digest('b'), 'Dockerfile'),
    contextSharedKey('p1', digest('a'), 'docker/Dockerfile'),
  ];
  assert.equal(new Set([key, ...others]).size, others.length + 1);
});
