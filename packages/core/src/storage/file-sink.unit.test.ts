import assert from 'node:assert/strict';
import { createReadStream } from 'node:fs';
import { mkdtemp, readdir, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { pipeline } from 'node:stream/promises';
import { after, before, describe, test } from 'node:test';
import { digestStream, MiB, pseudoRandomStream } from '../../test-support/streams.js';
import { HashingFileSink } from './file-sink.js';

const openFds = async () => (await readdir('/proc/self/fd')).length;

describe('HashingFileSink', () => {
  let dir: string;
  before(async () => {
    dir = await mkdtemp(path.join(tmpdir(), 'kiln-file-sink-'));
  });
  after(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  test('writes, hashes and counts a stream spanning several background syncs', async () => {
    const file = path.join(dir, 'big');
    const size = 70 * MiB + 123;
    const expected = await digestStream(pseudoRandomStream(size, { seed: 'sink', chunkSize: 32 * 1024 }));
    const sink = new HashingFileSink(file);
    await pipeline(pseudoRandomStream(size, { seed: 'sink', chunkSize: 32 * 1024 }), sink);
    assert.equal(sink.bytes, size);
    assert.equal(sink.digest(), expected.sha256);
    assert.deepEqual(await digestStream(createReadStream(file)), expected);
    assert.equal((await stat(file)).mode & 0o777, 0o644);
  });

  test('an empty stream gives an empty file and the empty digest', async () => {
    const file = path.join(dir, 'empty');
    const sink = new HashingFileSink(file);
    await pipeline(pseudoRandomStream(0), sink);
    assert.equal(sink.bytes, 0);
    assert.equal(sink.digest(), 'e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855');
    assert.equal((await stat(file)).size, 0);
  });

  test('never writes into an existing file', async () => {
    const file = path.join(dir, 'taken');
    await writeFile(file, 'keep me');
    await assert.rejects(
      pipeline(pseudoRandomStream(1000), new HashingFileSink(file)),
      (err: NodeJS.ErrnoException) => err.code === 'EEXIST',
    );
    assert.equal((await stat(file)).size, 7);
  });

  test('a failing source closes the file (no descriptor left open)', async () => {
    const before = await openFds();
    const file = path.join(dir, 'partial');
    const boom = new Error('source broke');
    await assert.rejects(
      pipeline(pseudoRandomStream(80 * MiB, { failAt: 40 * MiB, error: boom }), new HashingFileSink(file)),
      (err) => err === boom,
    );
    // The destroy closes the handle asynchronously, after any background sync settles.
    for (let i = 0; i < 50 && (await openFds()) > before; i++) await new Promise((r) => setTimeout(r, 20));
    assert.equal(await openFds(), before);
  });
});
