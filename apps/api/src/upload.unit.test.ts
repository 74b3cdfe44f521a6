// receiveContext's stored-bytes budget, on a real temp directory (storage is not reached: nothing
// is restored here).
import assert from 'node:assert/strict';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { Readable } from 'node:stream';
import { after, before, test } from 'node:test';
import { gzipSync } from 'node:zlib';
import { AppError, type ObjectStorage } from '@kiln/core';
import { DOCKERFILE, file, tar } from '../../../packages/core/src/context/test-helpers.js';
import { receiveContext, type UploadBudget } from './upload.js';

let tmpDir: string;
before(async () => {
  tmpDir = await fs.mkdtemp(path.join(os.tmpdir(), 'kiln-upload-'));
});
after(() => fs.rm(tmpDir, { recursive: true, force: true }));

const body = tar([DOCKERFILE, file('big', Buffer.alloc(256 * 1024))]);
const receive = (budget: UploadBudget, bytes = body) =>
  receiveContext(Readable.from([bytes]), {
    storage: {} as ObjectStorage,
    tmpDir,
    limits: {},
    dockerfilePath: 'Dockerfile',
    allowedFrontends: [],
    budget,
  });
const refusal = (received: number) => new AppError('quota_exceeded', `over, at ${received}`);

test('an upload past its budget and past the looked-up limit is refused; its temp file goes', async () => {
  await assert.rejects(receive({ bytes: 1024, limit: async () => 4096, refusal }), /over, at \d+/);
  assert.deepEqual(await fs.readdir(tmpDir), []);
});

test('the budget counts the uncompressed tar (what is stored and charged), not the gzip received', async () => {
  const gz = gzipSync(body);
  const budget = 2 * gz.length;
  assert.ok(budget < body.length);
  await assert.rejects(receive({ bytes: budget, limit: async () => budget, refusal }, gz), /over, at \d+/);
});

test('an upload within the looked-up limit is received whole', async () => {
  const received = await receive({ bytes: 1024, limit: async () => body.length, refusal });
  assert.equal(received.size, body.length);
  await received.dispose();
});

test('a limit that cannot be looked up (the database is away) is 503 unavailable, not a 4xx', async () => {
  await assert.rejects(
    receive({ bytes: 0, limit: () => Promise.reject(new Error('connection refused')), refusal }),
    (err: unknown) => err instanceof AppError && err.code === 'unavailable',
  );
  assert.deepEqual(await fs.readdir(tmpDir), []);
});
