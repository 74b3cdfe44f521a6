/**
 * A project's shared build cache in Kiln's own storage, served to BuildKit over the build's
 * session as a content store (`type=local` cache; used when storage is not S3, which builders
 * reach themselves). Blobs live at `<prefix>blobs/sha256/<hex>`, content-addressed and checked
 * against their digest before they count; `<prefix>latest.json` names the manifest of the last
 * export, which the next build imports.
 */
import { PassThrough, Readable } from 'node:stream';
import type { ContentStore } from '@kiln/buildkit-client';
import type { ObjectStorage } from '@kiln/core';

const DIGEST = /^sha256:([0-9a-f]{64})$/;

function blobKey(prefix: string, digest: string): string {
  const hex = DIGEST.exec(digest)?.[1];
  // BuildKit names blobs by sha256; anything else is not a key of ours.
  if (!hex) throw Object.assign(new Error(`unsupported digest "${digest.slice(0, 80)}"`), { code: 3 });
  return `${prefix}blobs/sha256/${hex}`;
}

export function storageContentStore(storage: ObjectStorage, prefix: string): ContentStore {
  return {
    async info(digest) {
      return storage.head(blobKey(prefix, digest));
    },
    async read(digest, offset, length) {
      const end = length === undefined ? undefined : offset + length - 1;
      const { body } = await storage.get(blobKey(prefix, digest), {
        range: { start: offset, ...(end !== undefined ? { end } : {}) },
      });
      return body as Readable;
    },
    async write(expected) {
      const key = blobKey(prefix, expected);
      const sink = new PassThrough();
      const stored = storage.put(key, sink).then(async (put) => {
        // The session checked the digest before ending the sink; a store that hashed other bytes
        // (a torn write) must not keep them under this name.
        if (`sha256:${put.sha256}` !== expected) {
          await storage.delete(key);
          throw new Error(`stored ${key} has digest sha256:${put.sha256}, not ${expected}`);
        }
      });
      return { sink, stored };
    },
  };
}

/** The manifest descriptor of the project's last cache export, if any. */
export async function latestCacheManifest(
  storage: ObjectStorage,
  prefix: string,
): Promise<string | undefined> {
  try {
    const { body } = await storage.get(`${prefix}latest.json`);
    const chunks: Buffer[] = [];
    for await (const chunk of body as AsyncIterable<Buffer>) chunks.push(chunk);
    const digest = (JSON.parse(Buffer.concat(chunks).toString('utf8')) as { digest?: unknown }).digest;
    return typeof digest === 'string' && DIGEST.test(digest) ? digest : undefined;
  } catch {
    return undefined; // none yet, or unreadable: build without importing
  }
}

/** Records the export's manifest (`cache.manifest` of the solve's response) for the next build. */
export async function recordCacheManifest(
  storage: ObjectStorage,
  prefix: string,
  descriptorJson: string,
): Promise<void> {
  await storage.put(`${prefix}latest.json`, Readable.from([Buffer.from(descriptorJson)]), {
    contentType: 'application/json',
  });
}
