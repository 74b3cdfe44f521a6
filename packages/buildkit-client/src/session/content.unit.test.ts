import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { Duplex, PassThrough, Readable, Writable } from 'node:stream';
import { test } from 'node:test';
import { Metadata } from '../grpc/metadata.js';
import { status } from '../grpc/status.js';
import { type ContentStore, contentHandlers } from './content.js';
import type { ServerCall } from './grpc-server.js';

/** A store in memory that records every digest it is asked about. */
function memoryStore(sinkFails = false) {
  const blobs = new Map<string, Buffer>();
  const asked: string[] = [];
  const store: ContentStore = {
    async info(digest) {
      asked.push(digest);
      const blob = blobs.get(digest);
      return blob ? { size: blob.length } : undefined;
    },
    async read(digest, offset, length) {
      asked.push(digest);
      const blob = blobs.get(digest) ?? Buffer.alloc(0);
      return Readable.from([blob.subarray(offset, length === undefined ? undefined : offset + length)]);
    },
    async write(expected) {
      asked.push(expected);
      const chunks: Buffer[] = [];
      const sink = sinkFails
        ? new Writable({
            highWaterMark: 1,
            write: (_c, _e, cb) => setImmediate(() => cb(new Error('ENOSPC: no space left on device'))),
          })
        : new PassThrough();
      sink.on('data', (c: Buffer) => chunks.push(c));
      const stored = new Promise<void>((resolve, reject) => {
        sink.on('finish', () => {
          blobs.set(expected, Buffer.concat(chunks));
          resolve();
        });
        sink.on('error', reject);
      });
      return { sink, stored };
    },
  };
  return { store, blobs, asked };
}

/** A call of the Content service: its requests, and what it answered (messages, then a status). */
function fakeCall(requests: unknown[], request?: unknown) {
  const answers: unknown[] = [];
  const md = new Metadata();
  md.add('buildkit-attachable-store-id', 'local:c');
  let settle: (s: { code: number; details: string }) => void = () => undefined;
  const ended = new Promise<{ code: number; details: string }>((resolve) => {
    settle = resolve;
  });
  const call = Object.assign(
    new Duplex({
      objectMode: true,
      read() {},
      write(c, _e, cb) {
        answers.push(c);
        cb();
      },
      final(cb) {
        settle({ code: status.OK, details: '' });
        cb();
      },
    }),
    {
      metadata: md,
      request,
      fail: (code: number, details: string) => settle({ code, details }),
    },
  );
  for (const r of requests) call.push(r);
  call.push(null);
  return { call: call as unknown as ServerCall<never, unknown>, answers, ended };
}

const write = (action: string, data: Buffer, expected: string, offset = 0) => ({
  action,
  ref: 'r',
  total: 0,
  expected,
  offset,
  data,
});

test('digests that are not sha256:<hex> are refused before the store sees them', async () => {
  const { store, asked } = memoryStore();
  const handlers = contentHandlers(new Map([['local:c', store]]));
  const traversal = 'sha256:../../../secret.txt';
  const read = fakeCall([], { digest: traversal, offset: 0, size: 0 });
  (handlers.Read as (c: unknown) => void)(read.call);
  assert.equal((await read.ended).code, status.INVALID_ARGUMENT);
  for (const expected of [traversal, '']) {
    const w = fakeCall([write('STAT', Buffer.alloc(0), expected)]);
    (handlers.Write as (c: unknown) => void)(w.call);
    assert.equal((await w.ended).code, status.INVALID_ARGUMENT, JSON.stringify(expected));
  }
  assert.deepEqual(asked, []);
});

test('a commit naming another digest than the write was opened with stores nothing', async () => {
  const { store, blobs } = memoryStore();
  const handlers = contentHandlers(new Map([['local:c', store]]));
  const data = Buffer.from('the daemon wrote this');
  const real = `sha256:${createHash('sha256').update(data).digest('hex')}`;
  const other = `sha256:${'0'.repeat(64)}`;
  const w = fakeCall([
    write('STAT', Buffer.alloc(0), other),
    write('WRITE', data, ''),
    write('COMMIT', Buffer.alloc(0), real, data.length),
  ]);
  (handlers.Write as (c: unknown) => void)(w.call);
  assert.equal((await w.ended).code, status.FAILED_PRECONDITION);
  assert.equal(blobs.size, 0);
});

test('a sink that fails ends the write with a status instead of leaving BuildKit waiting', {
  timeout: 10_000,
}, async () => {
  const { store } = memoryStore(true);
  const handlers = contentHandlers(new Map([['local:c', store]]));
  const data = Buffer.alloc(64 * 1024, 1);
  const digest = `sha256:${createHash('sha256').update(data).digest('hex')}`;
  const w = fakeCall([
    write('STAT', Buffer.alloc(0), digest),
    write('WRITE', data, ''),
    write('WRITE', data, ''),
  ]);
  (handlers.Write as (c: unknown) => void)(w.call);
  const { code, details } = await w.ended;
  assert.notEqual(code, status.OK);
  assert.match(details, /ENOSPC|closed/);
});
