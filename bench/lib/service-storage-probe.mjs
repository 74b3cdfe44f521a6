#!/usr/bin/env node

// Diagnostic for the service benchmark's 512 MiB export: the worker's storage write path alone,
// without BuildKit or gRPC, to tell its cost apart from the rest of a build. The worker pipes the
// export (which arrives as 32 KiB messages) into a PassThrough read by LocalDirStorage.put
// (HashingFileSink: sha256 + count, writev, fdatasync every 32 MiB and at the end).
//
//   node service-storage-probe.mjs DIR VARIANT [MIB]
//   VARIANT: put-32k         LocalDirStorage.put ← PassThrough ← 32 KiB chunks (the worker's path)
//            put-1m          the same with 1 MiB chunks
//            file-32k        fs.createWriteStream ← 32 KiB chunks (no hashing, no fsync)
//            file-32k-flush  the same with flush: true (fsync on close)
//            hash-32k        sha256 over the bytes only (CPU, no I/O)
// Writes MIB (default 512) MiB of constant bytes under DIR, removes them, and prints one JSON
// line: {variant, seconds, writes}.

import { createHash } from 'node:crypto';
import { once } from 'node:events';
import fs from 'node:fs';
import path from 'node:path';
import { PassThrough } from 'node:stream';
import { finished } from 'node:stream/promises';
import { pathToFileURL } from 'node:url';

const ROOT = path.resolve(import.meta.dirname, '../..');
const [dir, variant, mib = '512'] = process.argv.slice(2);
if (!dir || !variant) {
  process.stderr.write('usage: service-storage-probe.mjs DIR VARIANT [MIB]\n');
  process.exit(2);
}
const MiB = 1024 * 1024;
const total = Number(mib) * MiB;
const chunk = Buffer.alloc(variant.endsWith('1m') ? MiB : 32 * 1024, 0x5a);

/** Writes `total` bytes into `w` as fast as its backpressure allows, then ends it. */
async function feed(w) {
  let writes = 0;
  for (let sent = 0; sent < total; sent += chunk.length) {
    writes++;
    if (!w.write(chunk)) await once(w, 'drain');
  }
  w.end();
  return writes;
}

fs.mkdirSync(dir, { recursive: true });
const t0 = performance.now();
let writes = 0;
if (variant === 'put-32k' || variant === 'put-1m') {
  const { LocalDirStorage } = await import(
    pathToFileURL(path.join(ROOT, 'packages/core/dist/storage/local.js')).href
  );
  const storage = new LocalDirStorage({
    root: dir,
    publicBaseUrl: 'http://127.0.0.1',
    signingKey: 'bench-storage-probe-signing-key-0000',
  });
  const body = new PassThrough();
  const put = storage.put('probe/out.tar', body);
  writes = await feed(body);
  const stored = await put;
  if (stored.size !== total) throw new Error(`stored ${stored.size} bytes, expected ${total}`);
} else if (variant === 'file-32k' || variant === 'file-32k-flush') {
  const w = fs.createWriteStream(path.join(dir, 'probe.bin'), { flush: variant.endsWith('flush') });
  writes = await feed(w);
  await finished(w);
} else if (variant === 'hash-32k') {
  const h = createHash('sha256');
  for (let sent = 0; sent < total; sent += chunk.length) {
    h.update(chunk);
    writes++;
  }
  h.digest('hex');
} else {
  process.stderr.write(`unknown variant ${variant}\n`);
  process.exit(2);
}
const seconds = (performance.now() - t0) / 1000;
fs.rmSync(path.join(dir, 'probe'), { recursive: true, force: true });
fs.rmSync(path.join(dir, 'probe.bin'), { force: true });
process.stdout.write(`${JSON.stringify({ variant, seconds: Number(seconds.toFixed(3)), writes })}\n`);
