import assert from 'node:assert/strict';
import { test } from 'node:test';
import { ALLOWED_BUILDKIT_ARGS, reservedBuildArg } from './build-args.js';

test('BUILDKIT_* args are reserved, in any case, naming the arg', () => {
  for (const name of [
    'BUILDKIT_CACHE_MOUNT_NS',
    'BUILDKIT_SYNTAX',
    'BUILDKIT_DISABLE_FILEOP',
    'buildkit_cache_mount_ns',
    'BuildKit_Future',
  ]) {
    assert.match(reservedBuildArg(name) ?? '', new RegExp(`build arg "${name}" is reserved`), name);
  }
});

test('the allow list and ordinary args pass', () => {
  for (const name of [...ALLOWED_BUILDKIT_ARGS, 'NODE_ENV', 'BUILDKIT', 'MY_BUILDKIT_ARG', 'HTTP_PROXY']) {
    assert.equal(reservedBuildArg(name), undefined, name);
  }
});
