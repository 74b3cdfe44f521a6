import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { Readable } from 'node:stream';
import { test } from 'node:test';
import { startS3rver } from '../../test-support/s3rver.js';
import { readAll } from '../../test-support/streams.js';
import { AppError } from '../errors.js';
import { contentDisposition, createStorage, LocalDirStorage, validateKey } from './index.js';
import { S3Storage } from './s3.js';

test('createStorage builds the backend the config names', async () => {
  const dir = await mkdtemp(path.join(tmpdir(), 'kiln-factory-'));
  const s3 = await startS3rver({ bucket: 'kiln' });
  try {
    const local = await createStorage({
      kind: 'local',
      root: dir,
      publicBaseUrl: 'http://127.0.0.1:8080',
      signingKey: 'k'.repeat(32),
    });
    assert.ok(local instanceof LocalDirStorage);
    assert.equal(local.kind, 'local');
    const remote = await createStorage({
      kind: 's3',
      bucket: s3.bucket,
      region: s3.region,
      endpoint: s3.endpoint,
      forcePathStyle: true,
      accessKeyId: s3.accessKeyId,
      secretAccessKey: s3.secretAccessKey,
    });
    assert.ok(remote instanceof S3Storage);
    assert.equal(remote.kind, 's3');
    for (const storage of [local, remote]) {
      await storage.check();
      await storage.put('f/x', Readable.from(['same api']));
      assert.equal((await readAll((await storage.get('f/x')).body)).toString(), 'same api');
    }
    // list(prefix): every object below it, with sizes, from both backends alike.
    for (const storage of [local, remote]) {
      for (const key of ['cache/p1/blobs/a', 'cache/p1/manifests/m', 'cache/p10/x', 'cache/p2/y'])
        await storage.put(key, Readable.from([key]));
      const listed: Array<{ key: string; size: number }> = [];
      for await (const o of storage.list('cache/p1/')) {
        assert.ok(o.lastModified.getTime() > Date.now() - 60_000, `${storage.kind}: lastModified`);
        listed.push({ key: o.key, size: o.size });
      }
      listed.sort((a, b) => a.key.localeCompare(b.key));
      assert.deepEqual(
        listed,
        [
          { key: 'cache/p1/blobs/a', size: 16 },
          { key: 'cache/p1/manifests/m', size: 20 },
        ],
        storage.kind,
      );
      const none: unknown[] = [];
      for await (const o of storage.list('nothing/here/')) none.push(o);
      assert.deepEqual(none, [], storage.kind);
    }
    remote.close();
  } finally {
    await s3.stop();
    await rm(dir, { recursive: true, force: true });
  }
});

test('validateKey', () => {
  for (const ok of ['a', 'contexts/sha256/abc.tar', 'a-b_c.d/E9', '_x', 'cache/p/blobs/sha256:ab'])
    assert.equal(validateKey(ok), ok);
  for (const bad of [
    '',
    '..',
    '.',
    'a/..',
    '../a',
    '/a',
    'a/',
    'a//b',
    '.a',
    'a\\b',
    'a b',
    'a\nb',
    'x'.repeat(1025),
    5,
  ]) {
    assert.throws(
      () => validateKey(bad),
      (e: unknown) => e instanceof AppError && e.code === 'invalid_request',
      String(bad),
    );
  }
});

test('contentDisposition', () => {
  assert.equal(contentDisposition('app.tar'), 'attachment; filename="app.tar"');
  assert.equal(
    contentDisposition('a "b".tar'),
    `attachment; filename="a _b_.tar"; filename*=UTF-8''a%20%22b%22.tar`,
  );
  assert.equal(contentDisposition('ü.tar'), `attachment; filename="_.tar"; filename*=UTF-8''%C3%BC.tar`);
  assert.equal(contentDisposition('../x\r\n.tar'), `attachment; filename=".._x.tar"`);
  assert.equal(
    contentDisposition('100%.tar'),
    `attachment; filename="100_.tar"; filename*=UTF-8''100%25.tar`,
  );
});
