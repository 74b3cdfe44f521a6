// Which recorded cache manifest a build imports: only one whose every blob is still stored.
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { Readable } from 'node:stream';
import { after, before, test } from 'node:test';
import { LocalDirStorage } from '@kiln/core';
import { latestCacheManifest, recordCacheManifest } from './build-cache-store.js';

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
