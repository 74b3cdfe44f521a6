import assert from 'node:assert/strict';
import { test } from 'node:test';
import { frontendFor } from './frontend.js';

test('no directive: the built-in Dockerfile frontend, told not to look for one', () => {
  assert.deepEqual(frontendFor({ kind: 'none' }), { frontend: 'dockerfile.v0', attrs: { cmdline: '' } });
});

test('an allowed image: the gateway runs it, with the directive as its command line', () => {
  assert.deepEqual(frontendFor({ kind: 'image', image: 'docker/dockerfile:1' }), {
    frontend: 'gateway.v0',
    attrs: { source: 'docker/dockerfile:1', cmdline: 'docker/dockerfile:1' },
  });
  // BuildKit takes the image from the first word and hands the whole value on.
  assert.deepEqual(frontendFor({ kind: 'image', image: 'example/frontend:2 --flag' }).attrs, {
    source: 'example/frontend:2',
    cmdline: 'example/frontend:2 --flag',
  });
});
