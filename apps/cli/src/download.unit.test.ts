// The artifact download: a real file served over loopback HTTP, checked against its sha256.
// A wrong digest or size deletes the download (and leaves an older file at dest alone).
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { once } from 'node:events';
import { createReadStream } from 'node:fs';
import {
  chmod,
  lstat,
  mkdir,
  mkdtemp,
  readdir,
  readFile,
  rm,
  stat,
  symlink,
  writeFile,
} from 'node:fs/promises';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { createServer as createNetServer } from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { PassThrough, Writable } from 'node:stream';
import { after, before, describe, test } from 'node:test';
import { setTimeout as delay } from 'node:timers/promises';
import { moduleAt, spawnModule } from '../test/module-child.js';
import {
  DigestMismatchError,
  destinationOf,
  digestFile,
  downloadArtifact,
  verifyDownload,
} from './download.js';
import { InterruptedError } from './errors.js';

let work = '';
let server: Server;
let base = '';
let artifact = '';
let digest = '';
let size = 0;

before(async () => {
  work = await mkdtemp(path.join(tmpdir(), 'kiln-cli-dl-'));
  artifact = path.join(work, 'served.tar');
  const content = randomBytes(3 * 1024 * 1024 + 5);
  await writeFile(artifact, content);
  digest = `sha256:${createHash('sha256').update(content).digest('hex')}`;
  size = content.length;
  server = createServer((req, res) => {
    if (req.url === '/artifact') {
      res.writeHead(200, { 'content-type': 'application/x-tar', 'content-length': String(size) });
      createReadStream(artifact).pipe(res);
    } else if (req.url === '/stall') {
      // Promises the whole file, sends a part, then nothing more (the connection stays open).
      res.writeHead(200, { 'content-length': String(size) });
      res.write(Buffer.alloc(64 * 1024));
    } else if (req.url === '/cut') {
      // Promises the whole file, sends half, then drops the connection.
      res.writeHead(200, { 'content-length': String(size) });
      res.write(Buffer.alloc(size / 2));
      setTimeout(() => res.destroy(), 50);
    } else {
      res.writeHead(403, { 'content-type': 'application/json' });
      res.end(JSON.stringify({ error: { code: 'forbidden', message: 'the signature does not match' } }));
    }
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
});
after(async () => {
  server.closeAllConnections();
  await new Promise((resolve) => server.close(resolve));
  await rm(work, { recursive: true, force: true });
});

const leftovers = async (dir: string) => (await readdir(dir)).filter((n) => n.endsWith('.kiln-part'));

describe('downloadArtifact', () => {
  test('the right digest: the file lands at dest (parents created), nothing else is left', async () => {
    const dest = path.join(work, 'ok', 'sub', 'app.tar');
    const got = await downloadArtifact({ url: `${base}/artifact`, digest, size, dest });
    assert.deepEqual(got, { digest, size });
    assert.deepEqual(await digestFile(dest), { digest, size });
    assert.deepEqual(await leftovers(path.dirname(dest)), []);
  });

  test('a wrong digest: DigestMismatchError, no file at dest, no temp file, an older dest untouched', async () => {
    const dir = path.join(work, 'bad');
    const wrong = `sha256:${'0'.repeat(64)}`;
    await assert.rejects(
      downloadArtifact({ url: `${base}/artifact`, digest: wrong, size, dest: path.join(dir, 'app.tar') }),
      (err: unknown) =>
        err instanceof DigestMismatchError &&
        err.code === 'digest_mismatch' &&
        err.message.includes(`expected ${wrong}, got ${digest}`),
    );
    await assert.rejects(stat(path.join(dir, 'app.tar')), { code: 'ENOENT' });
    assert.deepEqual(await leftovers(dir), []);

    const existing = path.join(dir, 'kept.tar');
    await writeFile(existing, 'the previous build');
    await assert.rejects(
      downloadArtifact({ url: `${base}/artifact`, digest: wrong, size, dest: existing }),
      DigestMismatchError,
    );
    assert.equal(await readFile(existing, 'utf8'), 'the previous build');
  });

  test('a wrong size fails the same way; a cut download fails and leaves nothing', async () => {
    const dest = path.join(work, 'size.tar');
    await assert.rejects(
      downloadArtifact({ url: `${base}/artifact`, digest, size: size + 1, dest }),
      /got 3145733 bytes, the build produced 3145734/,
    );
    // A connection lost mid-download is worth retrying (exit 3); a destination that fails is not.
    await assert.rejects(downloadArtifact({ url: `${base}/cut`, digest, size, dest }), {
      message: /^downloading the artifact to .* failed: aborted/,
      code: 'unreachable',
      exitCode: 3,
    });
    await assert.rejects(
      downloadArtifact({ url: `${base}/cut`, digest, size, dest: '-', stdout: new PassThrough().resume() }),
      { message: 'downloading the artifact failed: aborted', exitCode: 3 },
    );
    const full = new Writable({ write: (_c, _e, cb) => cb(new Error('ENOSPC: no space left on device')) });
    await assert.rejects(
      downloadArtifact({ url: `${base}/artifact`, digest, size, dest: '-', stdout: full }),
      {
        message: 'downloading the artifact failed: ENOSPC: no space left on device',
        exitCode: 1,
      },
    );
    await assert.rejects(stat(dest), { code: 'ENOENT' });
    assert.deepEqual(await leftovers(work), []);
  });

  test("the link's {error} answer is the message: exit 1, not the token's 4; an unreachable host is 3", async () => {
    await assert.rejects(
      downloadArtifact({ url: `${base}/expired`, digest, size, dest: path.join(work, 'x.tar') }),
      {
        message: 'downloading the artifact failed: the signature does not match',
        code: 'forbidden',
        exitCode: 1,
      },
    );
    const gone = createServer();
    await new Promise<void>((resolve) => gone.listen(0, '127.0.0.1', resolve));
    const port = (gone.address() as AddressInfo).port;
    await new Promise((resolve) => gone.close(resolve));
    await assert.rejects(
      downloadArtifact({ url: `http://127.0.0.1:${port}/a`, digest, size, dest: path.join(work, 'x.tar') }),
      { message: /^downloading the artifact failed: connect ECONNREFUSED/, code: 'unreachable', exitCode: 3 },
    );
  });

  test('a dest under a file: the reason names the file, not the clean-up after it', async () => {
    const file = path.join(work, 'plain-file');
    await writeFile(file, 'x');
    await assert.rejects(
      downloadArtifact({ url: `${base}/artifact`, digest, size, dest: path.join(file, 'sub', 'x.tar') }),
      { message: new RegExp(`: ${file} is not a directory$`) },
    );
  });

  test('dest through a symbolic link: the file it names gets the artifact, the link stays', async () => {
    const dir = await mkdtemp(path.join(work, 'link-'));
    await mkdir(path.join(dir, 'real'));
    const target = path.join(dir, 'real', 'out.tar');
    await writeFile(target, 'older');
    await symlink('real/out.tar', path.join(dir, 'link.tar'));
    await downloadArtifact({ url: `${base}/artifact`, digest, size, dest: path.join(dir, 'link.tar') });
    assert.ok((await lstat(path.join(dir, 'link.tar'))).isSymbolicLink());
    assert.deepEqual(await digestFile(target), { digest, size });
    assert.deepEqual([...(await leftovers(dir)), ...(await leftovers(path.join(dir, 'real')))], []);
  });

  test('dest a FIFO (as /dev/stdout piped on may be): written into once read, still a FIFO', {
    timeout: 30_000,
  }, async () => {
    const fifo = path.join(await mkdtemp(path.join(work, 'fifo-')), 'out');
    execFileSync('mkfifo', [fifo]);
    const downloading = downloadArtifact({ url: `${base}/artifact`, digest, size, dest: fifo });
    // Its reader comes later, as with `kiln build -o dest=p & tar x < p`.
    await new Promise((r) => setTimeout(r, 300));
    const read = digestFile(fifo);
    await downloading;
    assert.deepEqual(await read, { digest, size });
    assert.ok((await lstat(fifo)).isFIFO());
    assert.deepEqual(await leftovers(path.dirname(fifo)), []);
  });

  test('a FIFO nobody reads: waited for, and Ctrl-C ends the wait (no thread held in open)', {
    timeout: 30_000,
  }, async () => {
    const fifo = path.join(await mkdtemp(path.join(work, 'fifo-')), 'out');
    execFileSync('mkfifo', [fifo]);
    const controller = new AbortController();
    setTimeout(() => controller.abort(new InterruptedError()), 300);
    await assert.rejects(
      downloadArtifact({ url: `${base}/artifact`, digest, size, dest: fifo, signal: controller.signal }),
      InterruptedError,
    );
  });

  test('a second Ctrl-C exits at once, and the temp file goes with the process', {
    timeout: 30_000,
  }, async () => {
    const dir = await mkdtemp(path.join(work, 'twice-'));
    // The first interrupt is still being handled (its handler here does nothing) when the second comes.
    const child = spawnModule(
      `import { processIo } from ${moduleAt('./io.ts', import.meta.url)};
      import { downloadArtifact } from ${moduleAt('./download.ts', import.meta.url)};
      processIo().onInterrupt(() => {});
      await downloadArtifact({ url: ${JSON.stringify(`${base}/stall`)}, digest: null, dest: ${JSON.stringify(path.join(dir, 'app.tar'))} });`,
      { stdio: 'inherit', timeout: 25_000 },
    );
    while ((await leftovers(dir)).length === 0) await delay(20);
    child.kill('SIGINT');
    await delay(200);
    child.kill('SIGINT');
    const [code] = await once(child, 'exit');
    assert.equal(code, 130);
    assert.deepEqual(await readdir(dir), []);
  });

  test('a file written over keeps its mode; a name at the length limit still gets its temp file', async () => {
    const dir = await mkdtemp(path.join(work, 'mode-'));
    const dest = path.join(dir, 'private.tar');
    await writeFile(dest, 'older', { mode: 0o600 });
    await chmod(dest, 0o600);
    await downloadArtifact({ url: `${base}/artifact`, digest, size, dest });
    assert.equal((await stat(dest)).mode & 0o777, 0o600);
    const long = path.join(dir, `${'n'.repeat(251)}.tar`);
    await downloadArtifact({ url: `${base}/artifact`, digest, size, dest: long });
    assert.deepEqual(await digestFile(long), { digest, size });
  });

  test('dest - streams to stdout and still checks the digest at the end', async () => {
    const out = new PassThrough();
    const chunks: Buffer[] = [];
    out.on('data', (c: Buffer) => chunks.push(c));
    await downloadArtifact({ url: `${base}/artifact`, digest, size, dest: '-', stdout: out });
    assert.equal(`sha256:${createHash('sha256').update(Buffer.concat(chunks)).digest('hex')}`, digest);
    await assert.rejects(
      downloadArtifact({
        url: `${base}/artifact`,
        digest: `sha256:${'1'.repeat(64)}`,
        dest: '-',
        stdout: new PassThrough().resume(),
      }),
      DigestMismatchError,
    );
  });
});

test('refused before the build: a link to nowhere, a link loop, a socket, a file in a directory not writable', async () => {
  const dir = await mkdtemp(path.join(tmpdir(), 'kiln-cli-refused-'));
  try {
    await symlink('missing/out.tar', path.join(dir, 'dangling'));
    await symlink('loop-b', path.join(dir, 'loop-a'));
    await symlink('loop-a', path.join(dir, 'loop-b'));
    const sock = createNetServer().listen(path.join(dir, 'sock'));
    await once(sock, 'listening');
    try {
      for (const [name, why] of [
        ['dangling', /is a symbolic link to nowhere \(ENOENT\)/],
        ['loop-a', /is a symbolic link to nowhere \(ELOOP\)/],
        ['sock', /is neither a file, a FIFO nor a character device/],
      ] as const) {
        await assert.rejects(destinationOf(path.join(dir, name), name), { message: why }, name);
      }
    } finally {
      sock.close();
    }
    if (process.getuid?.() !== 0) {
      // Root writes anywhere: the check only means something for other users.
      await mkdir(path.join(dir, 'ro'));
      await writeFile(path.join(dir, 'ro', 'out.tar'), 'x');
      await chmod(path.join(dir, 'ro'), 0o555);
      await assert.rejects(destinationOf(path.join(dir, 'ro', 'out.tar'), 'ro/out.tar'), /is not writable/);
    }
    // A character device is written into, never replaced. Root gets a null device of its own, so
    // that a regression could not replace the machine's /dev/null; others cannot write in /dev.
    const devNull = process.getuid?.() === 0 ? path.join(dir, 'null') : '/dev/null';
    if (devNull !== '/dev/null') execFileSync('mknod', [devNull, 'c', '1', '3']);
    const got = await downloadArtifact({ url: `${base}/artifact`, digest, size, dest: devNull });
    assert.deepEqual(got, { digest, size });
    assert.ok((await stat(devNull)).isCharacterDevice());
    assert.deepEqual(await leftovers(path.dirname(devNull)), []);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test('verifyDownload with a real file', async () => {
  const file = path.join(work, 'verify.bin');
  await writeFile(file, 'hello');
  const actual = await digestFile(file);
  assert.deepEqual(actual, {
    digest: 'sha256:2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824',
    size: 5,
  });
  verifyDownload(file, { digest: actual.digest, size: 5 }, actual);
  verifyDownload(file, { digest: null }, actual); // nothing recorded: nothing to compare
  await writeFile(file, 'hellO'); // tampered
  assert.throws(
    () => verifyDownload(file, { digest: actual.digest, size: 5 }, { ...actual, digest: 'sha256:x' }),
    DigestMismatchError,
  );
  const tampered = await digestFile(file);
  assert.throws(() => verifyDownload(file, { digest: actual.digest, size: 5 }, tampered), /sha256 mismatch/);
});

test('destinationOf: a directory or a path under a file is refused before the build', async () => {
  const dir = await mkdtemp(path.join(tmpdir(), 'kiln-cli-dest-'));
  try {
    await writeFile(path.join(dir, 'f'), 'x');
    await destinationOf(path.join(dir, 'app.tar'), 'app.tar');
    await destinationOf(path.join(dir, 'new', 'deeper', 'app.tar'), 'new/deeper/app.tar');
    await destinationOf(path.join(dir, 'f'), 'f');
    await assert.rejects(destinationOf(dir, 'out'), {
      message: /--output dest "out" is a directory: name a file/,
    });
    await assert.rejects(destinationOf(path.join(dir, 'f', 'sub', 'app.tar'), 'f/sub/app.tar'), {
      message: `--output dest "f/sub/app.tar": ${path.join(dir, 'f')} is not a directory`,
    });
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});
