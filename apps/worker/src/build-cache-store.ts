/**
 * A project's shared build cache in Kiln's own storage, served to BuildKit over the build's
 * session as a content store (`type=local` cache; used when storage is not S3, which builders
 * reach themselves). Blobs live at `<prefix>blobs/sha256/<hex>`, content-addressed and checked
 * against their digest before they count; `<prefix>latest.json` names the manifest of the last
 * export, which the next build imports.
 *
 * Also the cache's bound on either kind of storage (`CacheBound`): a cache that went past it is
 * marked full (BUILD_CACHE_FULL), takes no export from then on, and is dropped whole by the next
 * retention pass. A cache gives way, never a build: it is the one stored thing that costs only
 * time to lose.
 */
import { PassThrough, Readable } from 'node:stream';
import type { ContentStore } from '@kiln/buildkit-client';
import { BUILD_CACHE_FULL, isAppError, type ObjectStorage } from '@kiln/core';

const DIGEST = /^sha256:([0-9a-f]{64})$/;

function blobKey(prefix: string, digest: string): string {
  const hex = DIGEST.exec(digest)?.[1];
  // BuildKit names blobs by sha256; anything else is not a key of ours.
  if (!hex)
    throw Object.assign(new Error(`unsupported digest "${digest.slice(0, 80)}"`), { code: INVALID_ARGUMENT });
  return `${prefix}blobs/sha256/${hex}`;
}

/** gRPC status codes a store's refusal carries to BuildKit. */
const INVALID_ARGUMENT = 3;
const RESOURCE_EXHAUSTED = 8;

export interface BoundedContentStore extends ContentStore {
  /** Why a blob was refused (past the bound), once one was: the export then did not complete. */
  readonly refusal: string | undefined;
}

/** How much a project's cache may hold, and which limit says so (for the build log). */
export interface CacheBound {
  bytes: number;
  /** Names the limit: "KILN_BUILD_CACHE_MAX_BYTES (…)" or the stored-bytes quota. */
  why: string;
}

/**
 * The project's cache under `prefix`, holding at most `bound` (none: no bound) for this build: a
 * blob that would take it past the bound is refused, so one build cannot grow a cache without
 * limit between two retention passes. What the prefix holds is listed once, at the first write;
 * concurrent builds of one project each see that.
 */
export function storageContentStore(
  storage: ObjectStorage,
  prefix: string,
  bound: CacheBound | undefined,
): BoundedContentStore {
  let held: Promise<number> | undefined;
  /** Blobs this store took since the listing; checked and added in one step, with no await between. */
  let taken = 0;
  let refusal: string | undefined;
  /** Room for the blob, or a refusal; resolves to what to give back should the blob not be stored. */
  const reserve = async (digest: string, total: number): Promise<number> => {
    if (!bound) return 0;
    held ??= cacheHeldBytes(storage, prefix);
    const before = (await held) + taken;
    // total 0 (unknown) is not a size a bound can admit.
    if (total > 0 && before + total <= bound.bytes) {
      taken += total;
      return total;
    }
    refusal = `it holds ${before} bytes and ${digest} is ${total > 0 ? `${total} bytes` : 'of unknown size'}, past ${bound.why}`;
    // Left as it is, the cache would refuse every later export too.
    await markCacheFull(storage, prefix, refusal).catch(() => undefined);
    throw Object.assign(new Error(refusal), { code: RESOURCE_EXHAUSTED, details: refusal });
  };
  return {
    get refusal() {
      return refusal;
    },
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
    async write(expected, total) {
      const key = blobKey(prefix, expected);
      const reserved = await reserve(expected, total);
      const sink = new PassThrough();
      const stored = storage
        .put(key, sink)
        .then(async (put) => {
          // The session checked the digest before ending the sink; a store that hashed other bytes
          // (a torn write) must not keep them under this name.
          if (`sha256:${put.sha256}` !== expected) {
            await storage.delete(key);
            throw new Error(`stored ${key} has digest sha256:${put.sha256}, not ${expected}`);
          }
        })
        .catch((err: unknown) => {
          taken -= reserved;
          throw err;
        });
      return { sink, stored };
    },
  };
}

/**
 * The manifest of the project's last cache export, if any, and only when every blob it names is
 * still stored. Retention drops a cache whole, and a build exporting meanwhile may then record a
 * manifest naming blobs just deleted; importing it would fail builds instead of rebuilding.
 */
export async function latestCacheManifest(
  storage: ObjectStorage,
  prefix: string,
): Promise<string | undefined> {
  let root: Descriptor;
  try {
    root = await readJson<Descriptor>(storage, `${prefix}latest.json`);
  } catch {
    return undefined; // none yet, or unreadable: build without importing
  }
  if (typeof root.digest !== 'string' || !DIGEST.test(root.digest)) return undefined;
  return (await isComplete(storage, prefix, root).catch(() => false)) ? root.digest : undefined;
}

interface Descriptor {
  mediaType?: unknown;
  digest?: unknown;
  size?: unknown;
}

/** Manifests and indexes: blobs that name other blobs. */
const LISTS = /(manifest|index)[.+]|manifest\.list|image\.index/;
/** More than any cache manifest names, or weighs; a bigger one is not walked (and not imported). */
const MAX_BLOBS = 10_000;
const MAX_LIST_BYTES = 4 * 1024 * 1024;

/** Whether `root` and every blob it names, through indexes and manifests, are stored. */
async function isComplete(storage: ObjectStorage, prefix: string, root: Descriptor): Promise<boolean> {
  const pending = [root];
  const seen = new Set<string>();
  for (let d = pending.pop(); d !== undefined; d = pending.pop()) {
    if (typeof d.digest !== 'string' || seen.has(d.digest)) continue;
    seen.add(d.digest);
    if (seen.size > MAX_BLOBS) return false;
    const key = blobKey(prefix, d.digest);
    if (!(await storage.head(key))) return false;
    if (typeof d.mediaType !== 'string' || !LISTS.test(d.mediaType)) continue;
    if (typeof d.size !== 'number' || d.size > MAX_LIST_BYTES) return false;
    const list = await readJson<{ manifests?: Descriptor[]; layers?: Descriptor[]; config?: Descriptor }>(
      storage,
      key,
    );
    pending.push(...(list.manifests ?? []), ...(list.layers ?? []), ...(list.config ? [list.config] : []));
  }
  return true;
}

async function readJson<T>(storage: ObjectStorage, key: string): Promise<T> {
  return JSON.parse(await readText(storage, key)) as T;
}

async function readText(storage: ObjectStorage, key: string): Promise<string> {
  const { body } = await storage.get(key);
  const chunks: Buffer[] = [];
  for await (const chunk of body as AsyncIterable<Buffer>) chunks.push(chunk);
  return Buffer.concat(chunks).toString('utf8');
}

/** Bytes every object under `prefix` takes. */
export async function cacheHeldBytes(storage: ObjectStorage, prefix: string): Promise<number> {
  let bytes = 0;
  for await (const o of storage.list(prefix)) bytes += o.size;
  return bytes;
}

/** Marks the cache under `prefix` full, saying why: no build exports into it until retention drops it. */
export async function markCacheFull(storage: ObjectStorage, prefix: string, reason: string): Promise<void> {
  await storage.put(`${prefix}${BUILD_CACHE_FULL}`, Readable.from([Buffer.from(reason)]));
}

/** Why the cache under `prefix` takes no export (its full mark's text), if it is marked full. */
export async function cacheFullReason(storage: ObjectStorage, prefix: string): Promise<string | undefined> {
  try {
    return (await readText(storage, `${prefix}${BUILD_CACHE_FULL}`)) || 'it is marked full';
  } catch (err) {
    if (isAppError(err) && err.code === 'not_found') return undefined;
    throw err;
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
