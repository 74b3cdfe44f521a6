import assert from 'node:assert/strict';
import { createReadStream } from 'node:fs';
import { mkdir, mkdtemp, readdir, readFile, rm, symlink, utimes, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { PassThrough, Readable } from 'node:stream';
import { after, before, describe, test } from 'node:test';
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
import { LocalDirStorage, verifyLocalSignature } from './local.js';

const SIGNING_KEY = 'k'.repeat(32);

function isAppError(code: string) {
  return (err: unknown) => {
    assert.ok(err instanceof AppError, `expected AppError(${code}), got ${String(err)}`);
    assert.equal(err.code, code, err.message);
    return true;
  };
}

/** Every file under dir, relative, recursively. */
async function listFiles(dir: string): Promise<string[]> {
  const entries = await readdir(dir, { recursive: true, withFileTypes: true }).catch(() => []);
  return entries
    .filter((e) => !e.isDirectory())
    .map((e) => path.relative(dir, path.join(e.parentPath ?? e.path, e.name)))
    .sort();
}

describe('LocalDirStorage', () => {
  let base: string;
  let root: string;
  let storage: LocalDirStorage;

  before(async () => {
    base = await mkdtemp(path.join(tmpdir(), 'kiln-local-'));
    root = path.join(base, 'objects');
    storage = new LocalDirStorage({ root, publicBaseUrl: 'http://127.0.0.1:8080/', signingKey: SIGNING_KEY });
  });
  after(async () => {
    await rm(base, { recursive: true, force: true });
  });

  test('memory stays flat on a 200 MiB put (streamed from a generator)', async (t) => {
    // First test of the file, so the RSS baseline has not been raised by earlier big transfers.
    const size = 200 * MiB;
    const mem = sampleMemory();
    const put = await storage.put('big/200m', pseudoRandomStream(size, { seed: 'local-200' }));
    const figures = mem.stop();
    t.diagnostic(`local 200 MiB put: ${describeMemory(figures)}`);
    const expected = await digestStream(pseudoRandomStream(size, { seed: 'local-200' }));
    assert.deepEqual(put, { key: 'big/200m', size, sha256: expected.sha256 });
    assert.deepEqual(await digestStream((await storage.get('big/200m')).body), expected);
    assert.ok(figures.rssGrowth < 64 * MiB, `rss grew ${mib(figures.rssGrowth)}`);
    assert.ok(
      figures.liveArrayBuffersGrowth < 16 * MiB,
      `live arrayBuffers grew ${mib(figures.liveArrayBuffersGrowth)}`,
    );
    assert.ok(figures.arrayBuffersGrowth < 128 * MiB, `arrayBuffers grew ${mib(figures.arrayBuffersGrowth)}`);
    await storage.delete('big/200m');
  });

  test('removeAbandonedPuts removes idle put temp files under the prefixes given, nothing else', async () => {
    const old = new Date(Date.now() - 3_600_000);
    const files = {
      idle: path.join(root, 'artifacts/b1/1/.app.tar.0123456789abcdef.tmp'),
      busy: path.join(root, 'artifacts/b2/1/.app.tar.fedcba9876543210.tmp'),
      elsewhere: path.join(root, 'other/.x.0123456789abcdef.tmp'),
      object: path.join(root, 'artifacts/b1/1/app.tar'),
    };
    for (const [name, file] of Object.entries(files)) {
      await mkdir(path.dirname(file), { recursive: true });
      await writeFile(file, name);
      if (name !== 'busy') await utimes(file, old, old);
    }
    assert.deepEqual(await storage.removeAbandonedPuts(['artifacts/', 'contexts/'], 60_000), [files.idle]);
    for (const name of ['busy', 'elsewhere', 'object'] as const) {
      assert.equal(await readFile(files[name], 'utf8'), name);
    }
    await rm(path.join(root, 'other'), { recursive: true });
    await rm(path.join(root, 'artifacts'), { recursive: true });
  });

  test('put/get/head/delete round trip', async () => {
    const key = 'artifacts/b1/app.tar';
    const put = await storage.put(key, Readable.from([Buffer.from('hello '), Buffer.from('world')]));
    assert.deepEqual(put, { key, size: 11, sha256: sha256('hello world') });
    assert.deepEqual(await storage.head(key), { size: 11 });
    const got = await storage.get(key);
    assert.equal(got.size, 11);
    assert.equal(got.contentLength, 11);
    assert.equal(got.range, undefined);
    assert.equal((await readAll(got.body)).toString(), 'hello world');
    await storage.delete(key);
    assert.equal(await storage.head(key), undefined);
    await storage.delete(key); // idempotent
    await assert.rejects(storage.get(key), isAppError('not_found'));
    assert.equal(await storage.head('artifacts'), undefined, 'a key prefix (directory) is no object');
    await assert.rejects(storage.get('artifacts'), isAppError('not_found'));
    await storage.delete('artifacts'); // a directory: nothing to delete, no error
  });

  test('empty object; overwrite replaces the whole object', async () => {
    assert.deepEqual(await storage.put('e/empty', Readable.from([])), {
      key: 'e/empty',
      size: 0,
      sha256: sha256(''),
    });
    assert.equal((await readAll((await storage.get('e/empty')).body)).length, 0);
    await storage.put('e/x', Readable.from(['first version, longer']));
    await storage.put('e/x', Readable.from(['second']));
    assert.equal((await readAll((await storage.get('e/x')).body)).toString(), 'second');
  });

  test('range get', async () => {
    const data = Buffer.from(Array.from({ length: 100 }, (_, i) => i));
    await storage.put('r/data', Readable.from([data]));
    const a = await storage.get('r/data', { range: { start: 10, end: 19 } });
    assert.deepEqual([a.size, a.contentLength, a.range], [100, 10, { start: 10, end: 19 }]);
    assert.deepEqual(await readAll(a.body), data.subarray(10, 20));
    const b = await storage.get('r/data', { range: { start: 90 } });
    assert.deepEqual([b.contentLength, b.range], [10, { start: 90, end: 99 }]);
    assert.deepEqual(await readAll(b.body), data.subarray(90));
    const c = await storage.get('r/data', { range: { start: 95, end: 1000 } });
    assert.deepEqual(c.range, { start: 95, end: 99 });
    assert.deepEqual(await readAll(c.body), data.subarray(95));
    const d = await storage.get('r/data', { range: { start: 0, end: 0 } });
    assert.deepEqual(await readAll(d.body), data.subarray(0, 1));
    await assert.rejects(
      storage.get('r/data', { range: { start: 100 } }),
      isAppError('range_not_satisfiable'),
    );
    await assert.rejects(
      storage.get('r/data', { range: { start: 5, end: 4 } }),
      isAppError('invalid_request'),
    );
  });

  test('a source that errors half-way: the same error, no object, no temp file', async () => {
    const before = await listFiles(root);
    const boom = new Error('client went away');
    await assert.rejects(
      storage.put('fail/obj', pseudoRandomStream(8 * MiB, { failAt: 3 * MiB, error: boom })),
      (err) => err === boom,
    );
    assert.equal(await storage.head('fail/obj'), undefined);
    assert.deepEqual(await listFiles(root), before, 'no file (temp or final) left');

    // A failed overwrite keeps the old object intact.
    await storage.put('fail/keep', Readable.from(['old']));
    await assert.rejects(
      storage.put('fail/keep', pseudoRandomStream(4 * MiB, { failAt: MiB, error: boom })),
      (e) => e === boom,
    );
    assert.equal((await readAll((await storage.get('fail/keep')).body)).toString(), 'old');
    assert.deepEqual(await readdir(path.join(root, 'fail')), ['keep']);
  });

  test('a source destroyed without an error (premature close) is not stored', async () => {
    const src = pseudoRandomStream(8 * MiB);
    let n = 0;
    src.on('data', () => {
      if (++n === 5) src.destroy();
    });
    await assert.rejects(
      storage.put('fail/premature', src),
      (err: Error & { code?: string }) => err.code === 'ERR_STREAM_PREMATURE_CLOSE',
    );
    assert.equal(await storage.head('fail/premature'), undefined);
    assert.deepEqual(
      await readdir(path.join(root, 'fail')).then((l) => l.filter((f) => f.startsWith('.'))),
      [],
    );
  });

  test('putFile: copies a file (several copy buffers) with its hash, keeps the source; a missing source stores nothing', async () => {
    const src = path.join(base, 'source.bin');
    const size = 3 * MiB + 17;
    const expected = await digestStream(pseudoRandomStream(size, { seed: 'put-file' }));
    await writeFile(src, await readAll(pseudoRandomStream(size, { seed: 'put-file' })));
    const put = await storage.putFile('files/copy', src);
    assert.deepEqual(put, { key: 'files/copy', size, sha256: expected.sha256 });
    assert.deepEqual(await digestStream((await storage.get('files/copy')).body), expected);
    assert.deepEqual(await digestStream(createReadStream(src)), expected, 'the source is left as it was');
    await assert.rejects(
      storage.putFile('files/none', path.join(base, 'no-such-file')),
      isAppError('unavailable'),
    );
    assert.equal(await storage.head('files/none'), undefined);
    assert.deepEqual(await listFiles(path.join(root, 'files')), ['copy']);
    const ac = new AbortController();
    ac.abort(new Error('stop'));
    await assert.rejects(storage.putFile('files/aborted', src, { signal: ac.signal }), /stop/);
    assert.deepEqual(await listFiles(path.join(root, 'files')), ['copy']);
  });

  test('abort signal: rejects with its reason, leaves nothing', async () => {
    const ac = new AbortController();
    const reason = new Error('build canceled');
    const src = pseudoRandomStream(64 * MiB);
    let seen = 0;
    src.on('data', (c: Buffer) => {
      seen += c.length;
      if (seen >= 2 * MiB && !ac.signal.aborted) ac.abort(reason);
    });
    await assert.rejects(storage.put('abort/obj', src, { signal: ac.signal }), (e) => e === reason);
    assert.equal(await storage.head('abort/obj'), undefined);
    assert.deepEqual(await listFiles(path.join(root, 'abort')), []);
    await assert.rejects(
      storage.put('abort/obj2', Readable.from(['x']), { signal: ac.signal }),
      (e) => e === reason,
    );
  });

  test('keys with "..", absolute paths and other unsafe forms are rejected; nothing outside root is touched', async () => {
    const outside = path.join(base, 'outside');
    await mkdir(outside, { recursive: true });
    await writeFile(path.join(outside, 'secret'), 'untouched');
    const bad = [
      '..',
      '../outside/secret',
      'a/../../outside/secret',
      '/etc/passwd',
      'a//b',
      'a/',
      '.hidden',
      'a/./b',
      'a\\b',
      '',
      'x\0y',
      'sp ace',
      'é',
    ];
    for (const key of bad) {
      await assert.rejects(
        storage.put(key, Readable.from(['pwned'])),
        isAppError('invalid_request'),
        `put ${JSON.stringify(key)}`,
      );
      await assert.rejects(storage.get(key), isAppError('invalid_request'), `get ${JSON.stringify(key)}`);
      await assert.rejects(storage.head(key), isAppError('invalid_request'));
      await assert.rejects(storage.delete(key), isAppError('invalid_request'));
      await assert.rejects(storage.signedUrl(key, { expiresInSeconds: 60 }), isAppError('invalid_request'));
    }
    assert.throws(() => storage.pathFor('../x'), isAppError('invalid_request'));
    assert.equal(await readFile(path.join(outside, 'secret'), 'utf8'), 'untouched');
    assert.deepEqual(await readdir(outside), ['secret']);
  });

  test('symlinks under root do not lead outside it', async () => {
    const outside = path.join(base, 'outside2');
    await mkdir(outside, { recursive: true });
    await writeFile(path.join(outside, 'secret'), 'untouched');
    await mkdir(root, { recursive: true });
    await symlink(path.join(outside, 'secret'), path.join(root, 'filelink'));
    await symlink(outside, path.join(root, 'dirlink'));
    await assert.rejects(storage.get('filelink'), isAppError('not_found'));
    assert.equal(await storage.head('filelink'), undefined);
    await assert.rejects(storage.get('dirlink/secret'), isAppError('forbidden'));
    await assert.rejects(storage.put('dirlink/new', Readable.from(['x'])), isAppError('forbidden'));
    assert.deepEqual(await readdir(outside), ['secret']);
    await rm(path.join(root, 'filelink'));
    await rm(path.join(root, 'dirlink'));
  });

  test('signed URL: valid passes; tampered key/expires/filename/sig and expired are forbidden', async () => {
    await storage.put('dl/app.tar', Readable.from(['tarball']));
    const url = new URL(
      await storage.signedUrl('dl/app.tar', { expiresInSeconds: 60, filename: 'my app "v1".tar' }),
    );
    assert.equal(url.origin, 'http://127.0.0.1:8080');
    assert.equal(url.pathname, '/v1/files/dl/app.tar');
    const q = {
      key: decodeURIComponent(url.pathname.slice('/v1/files/'.length)),
      expires: url.searchParams.get('expires') ?? '',
      filename: url.searchParams.get('filename') ?? undefined,
      sig: url.searchParams.get('sig') ?? '',
    };
    assert.equal(q.filename, 'my app "v1".tar');
    assert.match(q.sig, /^[0-9a-f]{64}$/);
    const expires = Number(q.expires);
    assert.ok(Math.abs(expires - (Date.now() / 1000 + 60)) <= 2);

    assert.deepEqual(verifyLocalSignature(q, SIGNING_KEY), {
      key: 'dl/app.tar',
      expires,
      filename: 'my app "v1".tar',
    });
    assert.doesNotThrow(() => verifyLocalSignature({ ...q, method: 'get' }, SIGNING_KEY));

    const forbidden = isAppError('forbidden');
    const flip = (hex: string) => (hex[0] === '0' ? '1' : '0') + hex.slice(1);
    assert.throws(() => verifyLocalSignature({ ...q, key: 'dl/other.tar' }, SIGNING_KEY), forbidden);
    assert.throws(() => verifyLocalSignature({ ...q, key: '../dl/app.tar' }, SIGNING_KEY), forbidden);
    assert.throws(
      () => verifyLocalSignature({ ...q, expires: String(expires + 3600) }, SIGNING_KEY),
      forbidden,
    );
    assert.throws(() => verifyLocalSignature({ ...q, expires: `${expires}0` }, SIGNING_KEY), forbidden);
    assert.throws(() => verifyLocalSignature({ ...q, expires: 'soon' }, SIGNING_KEY), forbidden);
    assert.throws(() => verifyLocalSignature({ ...q, filename: 'evil.sh' }, SIGNING_KEY), forbidden);
    assert.throws(() => verifyLocalSignature({ ...q, filename: undefined }, SIGNING_KEY), forbidden);
    assert.throws(() => verifyLocalSignature({ ...q, sig: flip(q.sig) }, SIGNING_KEY), forbidden);
    assert.throws(() => verifyLocalSignature({ ...q, sig: q.sig.slice(2) }, SIGNING_KEY), forbidden);
    assert.throws(() => verifyLocalSignature({ ...q, sig: '' }, SIGNING_KEY), forbidden);
    assert.throws(() => verifyLocalSignature({ ...q, method: 'DELETE' }, SIGNING_KEY), forbidden);
    assert.throws(() => verifyLocalSignature(q, 'x'.repeat(32)), forbidden, 'another signing key');
    // expired: the same URL a second after its expiry
    assert.throws(() => verifyLocalSignature(q, SIGNING_KEY, (expires + 1) * 1000), forbidden);
    assert.doesNotThrow(() => verifyLocalSignature(q, SIGNING_KEY, expires * 1000));

    // without a filename the URL has no filename parameter and verifies without one
    const plain = new URL(await storage.signedUrl('dl/app.tar', { expiresInSeconds: 5 }));
    assert.equal(plain.searchParams.has('filename'), false);
    const pq = {
      key: 'dl/app.tar',
      expires: plain.searchParams.get('expires') ?? '',
      sig: plain.searchParams.get('sig') ?? '',
    };
    assert.doesNotThrow(() => verifyLocalSignature(pq, SIGNING_KEY));
    assert.throws(() => verifyLocalSignature({ ...pq, filename: 'x.tar' }, SIGNING_KEY), forbidden);
    assert.throws(() => verifyLocalSignature(pq, SIGNING_KEY, Date.now() + 10_000), forbidden);
  });

  test('a delete removes the directories it empties, up to the root, and no more', async () => {
    await storage.put('gc/b1/app.tar', Readable.from(['a']));
    await storage.put('gc/b1/prov/p.json', Readable.from(['p']));
    await storage.put('gc/b2/app.tar', Readable.from(['b']));
    await storage.delete('gc/b1/prov/p.json');
    assert.deepEqual(await readdir(path.join(root, 'gc/b1')), ['app.tar']);
    await storage.delete('gc/b1/app.tar');
    assert.deepEqual(await readdir(path.join(root, 'gc')), ['b2']);
    await storage.delete('gc/b2/app.tar');
    assert.ok(!(await readdir(root)).includes('gc'));
    await storage.delete('gc/b2/app.tar'); // gone already: still no error
    await readdir(root); // the root stays
  });

  test('a put beside a delete that empties its directory still lands', async () => {
    // A put in progress holds its temp file in the directory: the delete leaves it.
    const slow = new PassThrough();
    slow.write('first half ');
    await storage.put('race/slow/a', Readable.from(['a']));
    const putting = storage.put('race/slow/b', slow);
    await new Promise((r) => setTimeout(r, 50));
    await storage.delete('race/slow/a');
    slow.end('second half');
    await putting;
    assert.equal(
      (await readAll((await storage.get('race/slow/b')).body)).toString(),
      'first half second half',
    );
    // The window between making the directory and creating the temp file in it, raced.
    for (let i = 0; i < 300; i++) {
      await storage.put(`race/${i}/a`, Readable.from(['a']));
      const [, put] = await Promise.all([
        storage.delete(`race/${i}/a`),
        storage.put(`race/${i}/b`, Readable.from(['b'])),
      ]);
      assert.equal(put.size, 1);
      assert.deepEqual(await readdir(path.join(root, `race/${i}`)), ['b']);
      await storage.delete(`race/${i}/b`);
    }
  });

  test('a list while deletes empty directories under it still lists everything else', async () => {
    const keys = Array.from({ length: 20 }, (_, i) => `walk/d${i}/sub/o`);
    for (let round = 0; round < 50; round++) {
      for (const k of keys) await storage.put(k, Readable.from(['x']));
      const gone = keys[round % keys.length] as string;
      const listing = (async () => {
        const out: string[] = [];
        for await (const o of storage.list('walk/')) out.push(o.key);
        return out;
      })();
      await storage.delete(gone);
      const listed = await listing;
      for (const k of keys) if (k !== gone) assert.ok(listed.includes(k), `round ${round}: ${k} not listed`);
      for (const k of keys) await storage.delete(k);
    }
  });

  test('check(): passes on a writable root, AppError(unavailable) otherwise', async () => {
    await storage.check();
    assert.deepEqual(
      (await readdir(root)).filter((f) => f.startsWith('.kiln-probe')),
      [],
    );
    const fileAsRoot = path.join(base, 'not-a-dir');
    await writeFile(fileAsRoot, 'x');
    const broken = new LocalDirStorage({
      root: fileAsRoot,
      publicBaseUrl: 'http://127.0.0.1',
      signingKey: SIGNING_KEY,
    });
    await assert.rejects(broken.check(), isAppError('unavailable'));
    await assert.rejects(broken.put('a', Readable.from(['x'])), isAppError('unavailable'));
    assert.throws(() => new LocalDirStorage({ root, publicBaseUrl: 'http://x', signingKey: 'short' }));
  });
});
