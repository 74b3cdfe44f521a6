import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { mkdtemp, readdir, rm, writeFile } from 'node:fs/promises';
import { createServer as createHttpServer, request as httpRequest, type ServerResponse } from 'node:http';
import { createServer, Socket } from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { Readable } from 'node:stream';
import { after, before, describe, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import {
  AbortMultipartUploadCommand,
  CreateMultipartUploadCommand,
  GetObjectCommand,
  HeadObjectCommand,
  ListMultipartUploadsCommand,
  ListPartsCommand,
  type S3Client,
  UploadPartCommand,
} from '@aws-sdk/client-s3';
import { type StartedS3rver, startS3rver } from '../../test-support/s3rver.js';
import {
  describeMemory,
  digestStream,
  MiB,
  mib,
  pseudoRandomStream,
  readAll,
  sampleMemory,
  sha256,
} from '../../test-support/streams.js';
import { AppError } from '../errors.js';
import { S3Storage, type S3StorageOptions } from './s3.js';
import { getIfStored } from './util.js';

function isAppError(code: string) {
  return (err: unknown) => {
    assert.ok(
      err instanceof AppError,
      `expected AppError(${code}), got ${err instanceof Error ? `${err.name}: ${err.message}` : String(err)}`,
    );
    assert.equal(err.code, code, err.message);
    return true;
  };
}

function storageFor(s3: StartedS3rver, extra: Partial<S3StorageOptions> = {}): S3Storage {
  return new S3Storage({
    endpoint: s3.endpoint,
    region: s3.region,
    bucket: s3.bucket,
    accessKeyId: s3.accessKeyId,
    secretAccessKey: s3.secretAccessKey,
    forcePathStyle: true,
    ...extra,
  });
}

/** Names of the S3 commands a client sends (cleared by the caller). */
function recordCommands(client: S3Client): string[] {
  const seen: string[] = [];
  client.middlewareStack.add(
    (next, context) => async (args) => {
      seen.push(String(context.commandName ?? '?').replace(/Command$/, ''));
      return next(args);
    },
    { step: 'initialize', name: 'kilnTestCommandRecorder' },
  );
  return seen;
}

async function listFiles(dir: string): Promise<string[]> {
  const entries = await readdir(dir, { recursive: true, withFileTypes: true }).catch(() => []);
  return entries
    .filter((e) => !e.isDirectory())
    .map((e) => path.relative(dir, path.join(e.parentPath ?? e.path, e.name)))
    .sort();
}

describe('S3Storage against s3rver', () => {
  let s3: StartedS3rver;
  let storage: S3Storage;
  let commands: string[];
  const warnings: Array<{ obj: object; msg?: string | undefined }> = [];

  before(async () => {
    s3 = await startS3rver({ bucket: 'kiln' });
    storage = storageFor(s3, { logger: { warn: (obj, msg) => warnings.push({ obj, msg }) } });
    commands = recordCommands(storage.client);
  });
  after(async () => {
    storage.close();
    await s3.stop();
  });

  async function inProgressUploads(): Promise<string[]> {
    const out = await storage.client.send(new ListMultipartUploadsCommand({ Bucket: s3.bucket }));
    return (out.Uploads ?? []).map((u) => `${u.Key}#${u.UploadId}`);
  }

  test('memory stays flat on a 200 MiB multipart put', async (t) => {
    // First test of the file, so the RSS baseline has not been raised by earlier big transfers.
    const size = 200 * MiB;
    const mem = sampleMemory();
    const put = await storage.put('big/200m', pseudoRandomStream(size, { seed: 's3-200' }));
    const figures = mem.stop();
    t.diagnostic(
      `s3 200 MiB put (partSize 8 MiB, queueSize 2, s3rver in this process): ${describeMemory(figures)}`,
    );
    const expected = await digestStream(pseudoRandomStream(size, { seed: 's3-200' }));
    assert.deepEqual(put, { key: 'big/200m', size, sha256: expected.sha256 });
    assert.deepEqual(await storage.head('big/200m'), { size });
    // Live Buffers ≈ (queueSize + 1) × partSize: two parts in flight plus the one being gathered
    // (~32 MiB measured). RSS also holds s3rver (same process), allocator slack and garbage between
    // GCs, so its bound is looser; any whole-body buffering (≥ 200 MiB) would fail all three.
    assert.ok(
      figures.liveArrayBuffersGrowth < 48 * MiB,
      `live arrayBuffers grew ${mib(figures.liveArrayBuffersGrowth)}`,
    );
    assert.ok(figures.arrayBuffersGrowth < 128 * MiB, `arrayBuffers grew ${mib(figures.arrayBuffersGrowth)}`);
    assert.ok(figures.rssGrowth < 128 * MiB, `rss grew ${mib(figures.rssGrowth)}`);
    await storage.delete('big/200m');
  });

  test('removeAbandonedPuts aborts the multipart uploads a killed process left, once old enough', async () => {
    // Ages in whole seconds: "written lately" must hold however slow the machine is meanwhile.
    const idleMs = 1000;
    const { UploadId } = await storage.client.send(
      new CreateMultipartUploadCommand({ Bucket: s3.bucket, Key: 'artifacts/killed/app.tar' }),
    );
    // Another application's upload in the same bucket.
    const foreign = await storage.client.send(
      new CreateMultipartUploadCommand({ Bucket: s3.bucket, Key: 'backups/db.dump' }),
    );
    try {
      await sleep(idleMs + 100);
      await storage.client.send(
        new UploadPartCommand({
          Bucket: s3.bucket,
          Key: 'artifacts/killed/app.tar',
          UploadId,
          PartNumber: 1,
          Body: Buffer.alloc(1024, 1),
        }),
      );
      const open = async () => (await inProgressUploads()).sort();
      const both = [`artifacts/killed/app.tar#${UploadId}`, `backups/db.dump#${foreign.UploadId}`];
      assert.deepEqual(await open(), both);
      const under = ['artifacts/', 'contexts/'];
      assert.deepEqual(await storage.removeAbandonedPuts(under, 60_000), [], 'a recent one is left alone');
      // Begun over idleMs ago, but its part was written since: still at work.
      assert.deepEqual(
        await storage.removeAbandonedPuts(under, idleMs),
        [],
        'a part written lately keeps it',
      );
      assert.deepEqual(await open(), both);
      await sleep(idleMs + 100);
      assert.deepEqual(await storage.removeAbandonedPuts(under, idleMs), ['artifacts/killed/app.tar']);
      assert.deepEqual(await open(), [`backups/db.dump#${foreign.UploadId}`], "not Kiln's: left alone");
    } finally {
      // Whatever failed above, the next tests find no upload of this one's.
      await storage.client.send(
        new AbortMultipartUploadCommand({
          Bucket: s3.bucket,
          Key: 'backups/db.dump',
          UploadId: foreign.UploadId,
        }),
      );
    }
    assert.deepEqual(await readdir(s3.uploadsDir).catch(() => []), []);
  });

  test('removeAbandonedPuts goes on past an upload completed or aborted while it looks (NoSuchUpload)', async () => {
    const begin = async (Key: string) => {
      const { UploadId } = await storage.client.send(
        new CreateMultipartUploadCommand({ Bucket: s3.bucket, Key }),
      );
      return UploadId as string;
    };
    const gone = await begin('artifacts/raced/app.tar');
    await begin('artifacts/left/app.tar');
    await sleep(100);
    // The real server's answer, timed: the first upload ends just before its parts are listed.
    const send = storage.client.send.bind(storage.client);
    storage.client.send = (async (command: { input?: { Key?: string } }) => {
      if (command instanceof ListPartsCommand && command.input.Key === 'artifacts/raced/app.tar') {
        await send(
          new AbortMultipartUploadCommand({
            Bucket: s3.bucket,
            Key: 'artifacts/raced/app.tar',
            UploadId: gone,
          }),
        );
      }
      return send(command as never);
    }) as typeof storage.client.send;
    try {
      assert.deepEqual(await storage.removeAbandonedPuts(['artifacts/'], 50), ['artifacts/left/app.tar']);
    } finally {
      storage.client.send = send;
    }
    assert.deepEqual(await inProgressUploads(), []);
  });

  test('check() passes', async () => {
    await storage.check();
  });

  test('put/get/head/delete round trip', async () => {
    const key = 'artifacts/b1/app.tar';
    const put = await storage.put(key, Readable.from([Buffer.from('hello '), Buffer.from('world')]), {
      contentType: 'application/x-tar',
    });
    assert.deepEqual(put, { key, size: 11, sha256: sha256('hello world') });
    assert.deepEqual(await storage.head(key), { size: 11 });
    const head = await storage.client.send(new HeadObjectCommand({ Bucket: s3.bucket, Key: key }));
    assert.equal(head.ContentType, 'application/x-tar');
    const got = await storage.get(key);
    assert.deepEqual([got.size, got.contentLength, got.range], [11, 11, undefined]);
    assert.equal((await readAll(got.body)).toString(), 'hello world');
    await storage.delete(key);
    assert.equal(await storage.head(key), undefined);
    await storage.delete(key); // idempotent
    await assert.rejects(storage.get(key), isAppError('not_found'));
  });

  test('putFile stores a file as put would', async () => {
    const dir = await mkdtemp(path.join(tmpdir(), 'kiln-s3-putfile-'));
    try {
      const src = path.join(dir, 'ctx.tar');
      await writeFile(src, 'a context');
      assert.deepEqual(await storage.putFile('contexts/f.tar', src), {
        key: 'contexts/f.tar',
        size: 9,
        sha256: sha256('a context'),
      });
      assert.equal((await readAll((await storage.get('contexts/f.tar')).body)).toString(), 'a context');
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  test('empty object', async () => {
    assert.deepEqual(await storage.put('e/empty', Readable.from([])), {
      key: 'e/empty',
      size: 0,
      sha256: sha256(''),
    });
    const got = await storage.get('e/empty');
    assert.equal(got.size, 0);
    assert.equal((await readAll(got.body)).length, 0);
  });

  test('40 MiB streamed put goes multipart and comes back byte-identical', async () => {
    const size = 40 * MiB;
    commands.length = 0;
    const put = await storage.put('big/40m', pseudoRandomStream(size, { seed: 's3-40' }));
    const expected = await digestStream(pseudoRandomStream(size, { seed: 's3-40' }));
    assert.deepEqual(put, { key: 'big/40m', size, sha256: expected.sha256 });
    assert.deepEqual(
      commands.filter((c) => c !== 'UploadPart'),
      ['CreateMultipartUpload', 'CompleteMultipartUpload', 'HeadObject'],
    );
    assert.equal(commands.filter((c) => c === 'UploadPart').length, 5, '5 parts of 8 MiB');
    const got = await storage.get('big/40m');
    assert.equal(got.size, size);
    assert.deepEqual(await digestStream(got.body), expected);
    assert.deepEqual(await inProgressUploads(), []);
    await storage.delete('big/40m');
  });

  test('source error half-way through a multipart put: same error, no object, no in-progress upload', async () => {
    const bucketDir = path.join(s3.directory, s3.bucket);
    const filesBefore = await listFiles(bucketDir);
    commands.length = 0;
    warnings.length = 0;
    const boom = new Error('client went away');
    await assert.rejects(
      storage.put('fail/mp', pseudoRandomStream(40 * MiB, { failAt: 20 * MiB, error: boom })),
      (err) => err === boom,
    );
    assert.ok(commands.includes('CreateMultipartUpload'), commands.join());
    assert.ok(
      commands.filter((c) => c === 'UploadPart').length >= 1,
      'parts had been uploaded before the failure',
    );
    assert.ok(commands.includes('AbortMultipartUpload'), commands.join());
    assert.ok(commands.includes('ListParts'), 'the abort is verified');
    assert.equal(commands.includes('CompleteMultipartUpload'), false);
    assert.deepEqual(warnings, []);
    assert.equal(await storage.head('fail/mp'), undefined);
    assert.deepEqual(await inProgressUploads(), [], 'ListMultipartUploads');
    assert.deepEqual(await readdir(s3.uploadsDir).catch(() => []), [], "s3rver's upload directory");
    assert.deepEqual(await listFiles(bucketDir), filesBefore, 'no file added to the bucket directory');
  });

  test('source error before the first part is complete: nothing is sent, nothing stored', async () => {
    commands.length = 0;
    const boom = new Error('early failure');
    await assert.rejects(
      storage.put('fail/small', pseudoRandomStream(20 * MiB, { failAt: 3 * MiB, error: boom })),
      (e) => e === boom,
    );
    assert.deepEqual(commands, []);
    assert.equal(await storage.head('fail/small'), undefined);
  });

  test('a source destroyed without an error (premature close) is not stored as a short object', async () => {
    const src = pseudoRandomStream(30 * MiB);
    let seen = 0;
    src.on('data', (c: Buffer) => {
      seen += c.length;
      if (seen >= 10 * MiB && !src.destroyed) src.destroy();
    });
    await assert.rejects(
      storage.put('fail/premature', src),
      (err: Error & { code?: string }) => err.code === 'ERR_STREAM_PREMATURE_CLOSE',
    );
    assert.equal(await storage.head('fail/premature'), undefined);
    assert.deepEqual(await inProgressUploads(), []);
  });

  test('abort signal mid-upload: rejects with its reason, aborts the multipart upload', async () => {
    const ac = new AbortController();
    const reason = new Error('build canceled');
    const src = pseudoRandomStream(64 * MiB);
    let seen = 0;
    src.on('data', (c: Buffer) => {
      seen += c.length;
      if (seen >= 20 * MiB && !ac.signal.aborted) ac.abort(reason);
    });
    commands.length = 0;
    await assert.rejects(storage.put('abort/mp', src, { signal: ac.signal }), (e) => e === reason);
    assert.ok(commands.includes('AbortMultipartUpload'), commands.join());
    assert.equal(await storage.head('abort/mp'), undefined);
    assert.deepEqual(await inProgressUploads(), []);
    assert.deepEqual(await readdir(s3.uploadsDir).catch(() => []), []);
    await assert.rejects(
      storage.put('abort/again', Readable.from(['x']), { signal: ac.signal }),
      (e) => e === reason,
    );
  });

  test('abort while the store holds the parts and the abort of the upload: rejects within its graces', {
    timeout: 60_000,
  }, async () => {
    // In front of s3rver: CreateMultipartUpload goes through, UploadPart and
    // AbortMultipartUpload are taken and never answered (a store that stopped answering).
    const held: string[] = [];
    const open = new Set<ServerResponse>();
    const target = new URL(s3.endpoint);
    const proxy = createHttpServer((req, res) => {
      const url = new URL(req.url ?? '/', 'http://proxy');
      if (url.searchParams.has('uploadId') && (req.method === 'PUT' || req.method === 'DELETE')) {
        held.push(req.method);
        open.add(res);
        req.resume();
        return;
      }
      const up = httpRequest(
        { host: target.hostname, port: target.port, method: req.method, path: req.url, headers: req.headers },
        (answer) => {
          res.writeHead(answer.statusCode ?? 502, answer.headers);
          answer.pipe(res);
        },
      );
      up.on('error', (err) => res.destroy(err));
      req.pipe(up);
    });
    await new Promise<void>((resolve) => proxy.listen(0, '127.0.0.1', resolve));
    const { port } = proxy.address() as { port: number };
    const stalled = new S3Storage({
      endpoint: `http://127.0.0.1:${port}`,
      region: s3.region,
      bucket: s3.bucket,
      accessKeyId: s3.accessKeyId,
      secretAccessKey: s3.secretAccessKey,
      forcePathStyle: true,
      socketTimeoutMs: 600_000,
    });
    try {
      const ac = new AbortController();
      const reason = new Error('the build exceeded its time limit');
      const put = stalled.put('held/mp', pseudoRandomStream(24 * MiB), { signal: ac.signal });
      for (let i = 0; !held.includes('PUT'); i++) {
        assert.ok(i < 200, 'no part was sent');
        await sleep(50);
      }
      ac.abort(reason);
      await assert.rejects(put, (e) => e === reason);
      assert.ok(held.includes('DELETE'), `the upload's abort was sent: ${held.join()}`);
    } finally {
      stalled.close();
      for (const res of open) res.destroy();
      proxy.closeAllConnections();
      await new Promise((resolve) => proxy.close(resolve));
    }
  });

  test('range get', async () => {
    const data = Buffer.from(Array.from({ length: 100 }, (_, i) => i));
    await storage.put('r/data', Readable.from([data]));
    const a = await storage.get('r/data', { range: { start: 10, end: 19 } });
    assert.deepEqual([a.size, a.contentLength, a.range], [100, 10, { start: 10, end: 19 }]);
    assert.deepEqual(await readAll(a.body), data.subarray(10, 20));
    const b = await storage.get('r/data', { range: { start: 90 } });
    assert.deepEqual([b.size, b.contentLength, b.range], [100, 10, { start: 90, end: 99 }]);
    assert.deepEqual(await readAll(b.body), data.subarray(90));
    const c = await storage.get('r/data', { range: { start: 95, end: 1000 } });
    assert.deepEqual(c.range, { start: 95, end: 99 });
    assert.deepEqual(await readAll(c.body), data.subarray(95));
    await assert.rejects(
      storage.get('r/data', { range: { start: 100 } }),
      isAppError('range_not_satisfiable'),
    );
    await assert.rejects(
      storage.get('r/data', { range: { start: 5, end: 4 } }),
      isAppError('invalid_request'),
    );
    await assert.rejects(storage.get('r/missing', { range: { start: 0 } }), isAppError('not_found'));
  });

  test('signed URL downloads with plain fetch (Content-Disposition set); an expired one is refused', async () => {
    const body = Buffer.from('signed bytes \u00e9');
    await storage.put('dl/app.tar', Readable.from([body]));
    const url = await storage.signedUrl('dl/app.tar', { expiresInSeconds: 60, filename: 'app-ü.tar' });
    assert.ok(url.startsWith(`${s3.endpoint}/kiln/dl/app.tar?`), url);
    const res = await fetch(url);
    assert.equal(res.status, 200);
    assert.deepEqual(Buffer.from(await res.arrayBuffer()), body);
    assert.equal(
      res.headers.get('content-disposition'),
      `attachment; filename="app-_.tar"; filename*=UTF-8''app-%C3%BC.tar`,
    );

    const plain = await fetch(await storage.signedUrl('dl/app.tar', { expiresInSeconds: 60 }));
    assert.equal(plain.status, 200);
    assert.equal(plain.headers.get('content-disposition'), null);
    await plain.arrayBuffer();

    const short = await storage.signedUrl('dl/app.tar', { expiresInSeconds: 1 });
    await sleep(2_100);
    const expired = await fetch(short);
    const text = await expired.text();
    assert.equal(expired.status, 403, text);
    assert.match(text, /AccessDenied|expired/i);
  });

  test('keys with ".." and other unsafe forms are rejected before any request', async () => {
    commands.length = 0;
    for (const key of ['..', '../x', 'a/../b', '/abs', 'a//b', '.hidden', 'a\\b', '']) {
      await assert.rejects(storage.put(key, Readable.from(['x'])), isAppError('invalid_request'));
      await assert.rejects(storage.get(key), isAppError('invalid_request'));
      await assert.rejects(storage.head(key), isAppError('invalid_request'));
      await assert.rejects(storage.delete(key), isAppError('invalid_request'));
      await assert.rejects(storage.signedUrl(key, { expiresInSeconds: 60 }), isAppError('invalid_request'));
    }
    assert.deepEqual(commands, []);
  });

  test('prefix: keys live under it in the bucket', async () => {
    const prefixed = storageFor(s3, { prefix: '/tenant-a/' });
    try {
      await prefixed.put('x/y', Readable.from(['p']));
      const raw = await prefixed.client.send(
        new GetObjectCommand({ Bucket: s3.bucket, Key: 'tenant-a/x/y' }),
      );
      assert.equal(await raw.Body?.transformToString(), 'p');
      assert.deepEqual(await prefixed.head('x/y'), { size: 1 });
      assert.equal(await storage.head('x/y'), undefined);
      assert.match(await prefixed.signedUrl('x/y', { expiresInSeconds: 5 }), /\/kiln\/tenant-a\/x\/y\?/);
    } finally {
      prefixed.close();
    }
  });

  test('a missing bucket is AppError(unavailable), never an object not found', async () => {
    const other = storageFor(s3, { bucket: 'no-such-bucket' });
    try {
      await assert.rejects(
        other.check(),
        (err) => isAppError('unavailable')(err) && /bucket does not exist/.test((err as Error).message),
      );
      // Taken for a missing object, it had downloads answer 404 and queued builds fail for good.
      await assert.rejects(other.get('contexts/x'), isAppError('unavailable'));
      await assert.rejects(getIfStored(other, 'contexts/x'), isAppError('unavailable'));
      assert.equal(await getIfStored(storage, 'contexts/none'), undefined);
    } finally {
      other.close();
    }
  });
});

describe('S3Storage when the server is gone', () => {
  test('stopped server: put/check/head/get reject with AppError(unavailable) quickly', async (t) => {
    const s3 = await startS3rver({ bucket: 'kiln' });
    const storage = storageFor(s3);
    try {
      await storage.put('warm/up', Readable.from(['x'])); // a kept-alive connection exists
      await s3.stop();
      const t0 = Date.now();
      await assert.rejects(
        storage.put('after/stop', pseudoRandomStream(20 * MiB)),
        isAppError('unavailable'),
      );
      await assert.rejects(storage.put('after/small', Readable.from(['x'])), isAppError('unavailable'));
      await assert.rejects(storage.check(), isAppError('unavailable'));
      await assert.rejects(storage.head('warm/up'), isAppError('unavailable'));
      await assert.rejects(storage.get('warm/up'), isAppError('unavailable'));
      await assert.rejects(getIfStored(storage, 'warm/up'), isAppError('unavailable'));
      const elapsed = Date.now() - t0;
      t.diagnostic(
        `stopped server: 2 puts, check, head, get all rejected within ${elapsed} ms (default 3 attempts)`,
      );
      assert.ok(elapsed < 15_000, `took ${elapsed} ms`);
    } finally {
      storage.close();
      await s3.stop();
    }
  });

  /** S3Storage against a server that accepts connections and never answers. */
  async function blackHole(extra: Partial<S3StorageOptions>) {
    const sockets = new Set<Socket>();
    const server = createServer((sock) => {
      sockets.add(sock);
      sock.on('error', () => undefined);
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    const { port } = server.address() as { port: number };
    const storage = new S3Storage({
      endpoint: `http://127.0.0.1:${port}`,
      region: 'us-east-1',
      bucket: 'kiln',
      accessKeyId: 'S3RVER',
      secretAccessKey: 'S3RVER',
      forcePathStyle: true,
      ...extra,
    });
    const close = async () => {
      storage.close();
      for (const s of sockets) s.destroy();
      await new Promise((resolve) => server.close(resolve));
    };
    return { storage, sockets, close };
  }

  test('a server that accepts connections but never answers: bounded by the socket timeout', async (t) => {
    const { storage, close } = await blackHole({ socketTimeoutMs: 500, maxAttempts: 2 });
    try {
      const t0 = Date.now();
      await assert.rejects(storage.check(), isAppError('unavailable'));
      await assert.rejects(storage.put('hang/x', Readable.from(['x'])), isAppError('unavailable'));
      const elapsed = Date.now() - t0;
      t.diagnostic(
        `black-hole server: check + put rejected after ${elapsed} ms (socketTimeout 500 ms, 2 attempts)`,
      );
      assert.ok(elapsed < 10_000, `took ${elapsed} ms`);
    } finally {
      await close();
    }
  });

  test('an abort while the server holds a request rejects within its grace, not after the SDK gives up', {
    timeout: 60_000,
  }, async () => {
    const { storage, sockets, close } = await blackHole({ socketTimeoutMs: 600_000 });
    try {
      const ac = new AbortController();
      const reason = new Error('the build exceeded its time limit');
      const put = storage.put('held/x', Readable.from(['x']), { signal: ac.signal });
      for (let i = 0; sockets.size === 0; i++) {
        assert.ok(i < 100, 'the put never reached the server');
        await sleep(50);
      }
      ac.abort(reason);
      await assert.rejects(put, (e) => e === reason);
    } finally {
      await close();
    }
  });
});

describe('s3rver as published (no multipart shims)', () => {
  let s3: StartedS3rver;
  let storage: S3Storage;
  const warnings: Array<{ obj: object; msg?: string | undefined }> = [];
  before(async () => {
    s3 = await startS3rver({ bucket: 'kiln', multipartShims: false });
    storage = storageFor(s3, { logger: { warn: (obj, msg) => warnings.push({ obj, msg }) } });
  });
  after(async () => {
    storage.close();
    await s3.stop();
  });

  test('has no ListMultipartUploads / AbortMultipartUpload, so a failed multipart put leaves its parts there', async () => {
    await assert.rejects(
      storage.client.send(new ListMultipartUploadsCommand({ Bucket: s3.bucket })),
      (err: Error) => err.name === 'NotImplemented',
    );
    await assert.rejects(
      storage.client.send(new AbortMultipartUploadCommand({ Bucket: s3.bucket, Key: 'k', UploadId: 'x' })),
      (err: Error) => err.name === 'MethodNotAllowed',
    );
    const boom = new Error('source failed');
    // The put still fails with the source's error (not the failed abort's) and stores no object...
    await assert.rejects(
      storage.put('fail/mp', pseudoRandomStream(40 * MiB, { failAt: 20 * MiB, error: boom })),
      (e) => e === boom,
    );
    assert.equal(await storage.head('fail/mp'), undefined);
    // Nor can the worker's start-up clean-up list it: an error, which the worker logs.
    await assert.rejects(storage.removeAbandonedPuts(['artifacts/'], 0), (err) => err instanceof AppError);
    // ...but s3rver keeps the upload's parts on disk, and the failed abort is logged.
    assert.equal((await readdir(s3.uploadsDir)).length, 1);
    assert.ok(
      warnings.some((w) => w.msg === 'could not abort multipart upload'),
      JSON.stringify(warnings.map((w) => w.msg)),
    );
  });
});

describe("the test harness's s3rver: a PUT's object appears only once its body is whole, as on S3", () => {
  let s3: StartedS3rver;
  let storage: S3Storage;
  before(async () => {
    s3 = await startS3rver({ bucket: 'kiln' });
    storage = storageFor(s3);
  });
  after(async () => {
    storage.close();
    await s3.stop();
  });

  /** A raw PUT of a 116-byte body of which `sent` bytes are written; resolves with its socket. */
  async function rawPut(key: string, sent: number): Promise<Socket> {
    const socket = new Socket();
    await new Promise<void>((resolve, reject) => {
      socket.once('error', reject);
      socket.connect(Number(new URL(s3.endpoint).port), '127.0.0.1', resolve);
    });
    socket.write(
      `PUT /${s3.bucket}/${key} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 116\r\n` +
        `Content-Type: application/octet-stream\r\n\r\n${'a'.repeat(sent)}`,
    );
    return socket;
  }

  async function wholePut(key: string): Promise<void> {
    const socket = await rawPut(key, 116);
    const reply = await new Promise<string>((resolve) =>
      socket.once('data', (d: Buffer) => resolve(d.toString())),
    );
    socket.destroy();
    assert.match(reply, /^HTTP\/1\.1 200 /);
  }

  const keysUnder = async (prefix: string) => {
    const keys: string[] = [];
    for await (const o of storage.list(prefix)) keys.push(o.key);
    return keys;
  };

  test('a body cut short (BuildKit cancelling its uploads does that) leaves no object', async () => {
    const socket = await rawPut('cut/blob', 50);
    // A whole PUT on another connection, answered: s3rver has taken the first one's headers.
    await wholePut('whole/first');
    assert.deepEqual(await keysUnder('cut/'), [], 'listed while its body is coming');
    assert.equal(await storage.head('cut/blob'), undefined);
    socket.destroy();
    await wholePut('whole/second');
    const partials = path.join(s3.directory, s3.bucket, '._kiln_partial');
    for (let i = 0; (await readdir(partials).catch(() => [])).length > 0; i++) {
      assert.ok(i < 500, 'the cut-short body was never removed');
      await sleep(10);
    }
    assert.deepEqual(await keysUnder('cut/'), []);
    assert.deepEqual(await listFiles(path.join(s3.directory, s3.bucket, 'cut')), []);
  });

  test('a whole body is stored, with its size and MD5 ETag', async () => {
    await wholePut('whole/blob');
    assert.deepEqual(await storage.head('whole/blob'), { size: 116 });
    const head = await storage.client.send(new HeadObjectCommand({ Bucket: s3.bucket, Key: 'whole/blob' }));
    assert.equal(head.ETag, `"${createHash('md5').update('a'.repeat(116)).digest('hex')}"`);
    assert.equal(head.ContentType, 'application/octet-stream');
  });
});
