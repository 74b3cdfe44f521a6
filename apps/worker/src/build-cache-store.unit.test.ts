// Which recorded cache manifest a build imports (only one whose every blob is still stored), and
// the cache's bound: a store refuses past it and marks the cache full.
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { Readable } from 'node:stream';
import { after, before, test } from 'node:test';
import { LocalDirStorage } from '@kiln/core';
import {
  cacheFullReason,
  cacheHeldBytes,
  latestCacheManifest,
  markCacheFull,
  recordCacheManifest,
  storageContentStore,
} from './build-cache-store.js';

const prefix = 'cache/p1/';
let root = '';
let storage: LocalDirStorage;

before(async () => {
  root = await mkdtemp(path.join(tmpdir(), 'kiln-cache-store-'));
  storage = new LocalDirStorage({ root, publicBaseUrl: 'http://k', signingKey: 'k'.repeat(32) });
});
after(() => rm(root, { recursive: true, force: true }));

/** Stores a blob as the content store does; its descriptor. */
async function blob(mediaType: string, bytes: Buffer) {
  const hex = createHash('sha256').update(bytes).digest('hex');
  await storage.put(`${prefix}blobs/sha256/${hex}`, Readable.from([bytes]));
  return { mediaType, digest: `sha256:${hex}`, size: bytes.length };
}

test('a manifest is imported only while every blob it names, through its index, is stored', async () => {
  // BuildKit's layout: the descriptor names an index, which names the layers and the cache config.
  const layer = await blob('application/vnd.oci.image.layer.v1.tar+gzip', Buffer.from('layer'));
  const config = await blob('application/vnd.buildkit.cacheconfig.v0', Buffer.from('{"layers":[]}'));
  const index = await blob(
    'application/vnd.oci.image.index.v1+json',
    Buffer.from(JSON.stringify({ schemaVersion: 2, manifests: [layer, config] })),
  );
  await recordCacheManifest(storage, prefix, JSON.stringify(index));
  assert.equal(await latestCacheManifest(storage, prefix), index.digest);

  // What a retention pass dropping the cache under an exporting build leaves.
  await storage.delete(`${prefix}blobs/sha256/${layer.digest.slice(7)}`);
  assert.equal(await latestCacheManifest(storage, prefix), undefined);
  await storage.delete(`${prefix}blobs/sha256/${index.digest.slice(7)}`);
  assert.equal(await latestCacheManifest(storage, prefix), undefined);
});

test('no manifest, or an unreadable one: nothing is imported', async () => {
  assert.equal(await latestCacheManifest(storage, 'cache/none/'), undefined);
  await recordCacheManifest(storage, prefix, 'not json');
  assert.equal(await latestCacheManifest(storage, prefix), undefined);
});

test('a store refuses the blob that would pass its bound, and marks the cache full saying why', async () => {
  const p = 'cache/bounded/';
  assert.equal(await cacheFullReason(storage, p), undefined);
  const store = storageContentStore(storage, p, { bytes: 10, why: 'a bound of 10 bytes' });
  const small = Buffer.from('12345678');
  const digest = `sha256:${createHash('sha256').update(small).digest('hex')}`;
  const { sink, stored } = await store.write(digest, small.length);
  sink.end(small);
  await stored;
  await assert.rejects(
    store.write(`sha256:${'0'.repeat(64)}`, 3),
    /it holds 8 bytes and sha256:0+ is 3 bytes, past a bound of 10 bytes/,
  );
  assert.match(store.refusal ?? '', /past a bound of 10 bytes/);
  assert.equal(await cacheFullReason(storage, p), store.refusal);
  // The mark counts: it is stored like the blobs.
  assert.ok((await cacheHeldBytes(storage, p)) > small.length);
});

test('blobs written at once are counted together against the bound; one not stored gives its room back', async () => {
  const p = 'cache/concurrent/';
  const store = storageContentStore(storage, p, { bytes: 100, why: 'a bound of 100 bytes' });
  const blobs = ['a', 'b', 'c'].map((c) => {
    const bytes = Buffer.alloc(60, c);
    return { bytes, digest: `sha256:${createHash('sha256').update(bytes).digest('hex')}` };
  });
  // BuildKit writes several blobs of an export at once over the session.
  const writes = await Promise.allSettled(blobs.map((b) => store.write(b.digest, b.bytes.length)));
  assert.deepEqual(
    writes.map((w) => w.status),
    ['fulfilled', 'rejected', 'rejected'],
  );
  // The one taken is cut short: its 60 bytes are free again for a blob that fits.
  const first = writes[0] as PromiseFulfilledResult<Awaited<ReturnType<typeof store.write>>>;
  first.value.sink.destroy(new Error('the session ended'));
  await assert.rejects(first.value.stored);
  const small = Buffer.alloc(40, 'd');
  const { sink, stored } = await store.write(
    `sha256:${createHash('sha256').update(small).digest('hex')}`,
    small.length,
  );
  sink.end(small);
  await stored;
});

test('a cache without a bound takes any blob', async () => {
  const p = 'cache/unbounded/';
  const store = storageContentStore(storage, p, undefined);
  const big = Buffer.alloc(64 * 1024, 1);
  const { sink, stored } = await store.write(
    `sha256:${createHash('sha256').update(big).digest('hex')}`,
    big.length,
  );
  sink.end(big);
  await stored;
  assert.equal(store.refusal, undefined);
  assert.equal(await cacheHeldBytes(storage, p), big.length);
  await markCacheFull(storage, p, '');
  assert.equal(await cacheFullReason(storage, p), 'it is marked full');
});
