import assert from 'node:assert/strict';
import { stat, utimes, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { makeContext } from '../../../packages/buildkit-client/test-support/context.js';
import { contextFingerprint } from './context-digests.js';
import { planContext } from './context-tar.js';

const SECOND = 1_000_000_000n;

test('a rewrite of the same size with the mtime set back changes the fingerprint', async () => {
  const ctx = await makeContext({ Dockerfile: 'FROM scratch\nCOPY VERSION /\n', VERSION: '1.2.3\n' });
  try {
    const file = path.join(ctx.dir, 'VERSION');
    await utimes(file, 1, 1);
    // As if walked a second later: nothing is racily clean.
    const fingerprint = async () => {
      const plan = await planContext({ contextDir: ctx.dir, cwd: '/' });
      return contextFingerprint({ ...plan, walkedAt: plan.walkedAt + SECOND });
    };
    const before = await fingerprint();
    assert.ok(before);
    assert.equal(await fingerprint(), before, 'the same walk again gives the same fingerprint');
    await sleep(50);
    // What `echo 1.2.4 > VERSION; touch -d @1 VERSION` (or cp -p, rsync -a, tar x) leaves.
    await writeFile(file, '1.2.4\n');
    await utimes(file, 1, 1);
    assert.equal((await stat(file)).mtimeMs, 1000);
    assert.notEqual(await fingerprint(), before);
  } finally {
    await ctx.cleanup();
  }
});

test('a walk that began right after a change is not fingerprinted: the next change could keep every timestamp', async () => {
  const ctx = await makeContext({ Dockerfile: 'FROM scratch\n' });
  try {
    await writeFile(path.join(ctx.dir, 'fresh'), 'x');
    const plan = await planContext({ contextDir: ctx.dir, cwd: '/' });
    // Timed from the file's own change, not the clock: a loaded machine may take longer than the
    // window between the write and the walk.
    const changed = (await stat(path.join(ctx.dir, 'fresh'), { bigint: true })).ctimeNs;
    assert.equal(contextFingerprint({ ...plan, walkedAt: changed + 1_000_000n }), undefined);
    assert.ok(contextFingerprint({ ...plan, walkedAt: changed + SECOND }));
  } finally {
    await ctx.cleanup();
  }
});
