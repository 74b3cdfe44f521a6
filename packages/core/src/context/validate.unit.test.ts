import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { chmod, symlink as fsSymlink, link, mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { Readable, Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { after, before, describe, test } from 'node:test';
import { setTimeout as delay } from 'node:timers/promises';
import { gzipSync } from 'node:zlib';
import { AppError } from '../errors.js';
import { type ContextValidatorOptions, createContextValidator } from './index.js';
import {
  assertAppError,
  chunked,
  DOCKERFILE,
  dir,
  entry,
  file,
  hardlink,
  header,
  metaEntry,
  paxData,
  symlink,
  tar,
} from './test-helpers.js';

const KiB = 1024;
const MiB = 1024 * KiB;
const sha256 = (b: Buffer) => createHash('sha256').update(b).digest('hex');

/** Pipes `input` through a validator into memory; on failure checks `result` rejects with the same error. */
async function run(input: Buffer | Readable, options: ContextValidatorOptions = {}, chunkSize?: number) {
  const { stream, result } = createContextValidator(options);
  const chunks: Buffer[] = [];
  const sink = new Writable({
    write(chunk: Buffer, _enc, cb) {
      chunks.push(chunk);
      cb();
    },
  });
  try {
    await pipeline(Buffer.isBuffer(input) ? chunked(input, chunkSize) : input, stream, sink);
  } catch (err) {
    await assert.rejects(result, (e) => e === err, 'result rejects with the stream error');
    throw err;
  }
  return { summary: await result, output: Buffer.concat(chunks), stream };
}

const fails = (
  input: Buffer | Readable,
  code: AppError['code'],
  patterns: RegExp[],
  options: ContextValidatorOptions = {},
) => assertAppError(run(input, options), code, ...patterns);

describe('createContextValidator: valid contexts', () => {
  const archive = tar([
    dir('./'),
    DOCKERFILE,
    dir('src/'),
    file('src/a.txt', 'hello\n', { mode: 0o4755 }),
    symlink('src/link', '../Dockerfile'),
    symlink('abs-link', '/etc/passwd'), // symlinks may point anywhere: they are data, never followed
    hardlink('src/hard', 'src/a.txt'),
  ]);

  test('a plain tar passes through byte for byte; sha256 is the hash of those bytes', async () => {
    const { summary, output } = await run(archive);
    assert.ok(output.equals(archive));
    assert.deepEqual(summary, {
      sha256: sha256(archive),
      size: archive.length,
      compressedSize: archive.length,
      entries: 7,
      compressed: false,
      frontend: { kind: 'none' },
    });
  });

  test('a gzip-compressed tar is inflated; the output and hash are those of the tar', async () => {
    const gz = gzipSync(archive);
    const { summary, output } = await run(gz);
    assert.ok(output.equals(archive));
    assert.deepEqual(summary, {
      sha256: sha256(archive),
      size: archive.length,
      compressedSize: gz.length,
      entries: 7,
      compressed: true,
      frontend: { kind: 'none' },
    });
  });

  test('one byte at a time (sniffing and headers split across chunks)', async () => {
    assert.equal((await run(archive, {}, 1)).summary.sha256, sha256(archive));
    assert.equal((await run(gzipSync(archive), {}, 1)).summary.sha256, sha256(archive));
    assert.equal((await run(archive, {}, 700)).summary.entries, 7);
  });

  // zlib ends the stream at the member's end, before the input ends: this used to hang forever.
  test('zero padding after the gzip data is dropped: in one chunk, split, or arriving late', {
    timeout: 20_000,
  }, async () => {
    const padded = Buffer.concat([gzipSync(archive), Buffer.alloc(KiB)]);
    assert.equal((await run(padded)).summary.sha256, sha256(archive));
    assert.equal((await run(padded, {}, 100)).summary.sha256, sha256(archive));
    const late = Readable.from(
      (async function* () {
        yield gzipSync(archive);
        await delay(50);
        yield Buffer.alloc(4 * MiB);
      })(),
    );
    const { summary, output } = await run(late);
    assert.ok(output.equals(archive));
    assert.equal(summary.compressedSize, gzipSync(archive).length + 4 * MiB);
    // Not padding: what follows the gzip data is neither zeros nor another member.
    await fails(Buffer.concat([gzipSync(archive), Buffer.from('trailing text')]), 'invalid_context', [
      /^the gzip data is corrupt: /,
    ]);
  });

  test('Dockerfile in a subdirectory; the path is normalized', async () => {
    const sub = tar([dir('./docker/'), file('./docker/app.Dockerfile', 'FROM scratch\n'), file('x', 'x')]);
    for (const dockerfilePath of [
      'docker/app.Dockerfile',
      './docker/app.Dockerfile',
      'docker/../docker/app.Dockerfile',
    ]) {
      assert.equal((await run(sub, { dockerfilePath })).summary.entries, 3);
    }
    await fails(sub, 'invalid_context', [/^no Dockerfile at "Dockerfile" in the context$/]);
    await fails(sub, 'invalid_context', [/no Dockerfile at "docker\/Dockerfile"/], {
      dockerfilePath: 'docker/Dockerfile',
    });
    for (const dockerfilePath of ['../Dockerfile', '/Dockerfile', 'docker/', '.', '']) {
      assert.throws(
        () => createContextValidator({ dockerfilePath }),
        (e) =>
          e instanceof AppError &&
          e.code === 'invalid_spec' &&
          /must be a file path inside the context/.test(e.message),
      );
    }
  });

  test('GNU and PAX long names, links, old v7 and GNU headers, base-256 numbers', async () => {
    const long = `${'d'.repeat(90)}/${'e'.repeat(90)}/Dockerfile`;
    const base256 = header({ name: 'big-uid', size: 0 });
    base256.fill(0, 108, 116);
    base256[108] = 0x80;
    base256.writeUInt32BE(4_000_000_000, 112);
    let sum = 0;
    base256.fill(0x20, 148, 156);
    for (const b of base256) sum += b;
    base256.write(`${sum.toString(8).padStart(6, '0')}\0 `, 148, 'latin1');
    const archive = tar([
      file(long, 'FROM scratch\n', { long: 'gnu', format: 'gnu' }),
      file(`${long}.pax`, 'FROM scratch\n'),
      symlink('l1', 'x'.repeat(300), { long: 'gnu', format: 'gnu' }),
      symlink('l2', 'y'.repeat(300)),
      file('v7-file', 'x', { format: 'v7' }),
      { name: 'v7-dir/', type: '\0', format: 'v7' },
      file('v7-dir/inside', 'x', { format: 'v7' }),
      base256,
    ]);
    const { summary } = await run(archive, { dockerfilePath: long });
    assert.equal(summary.entries, 8);
  });

  test('duplicate names: allowed, the later entry wins (also for the Dockerfile check)', async () => {
    await run(tar([DOCKERFILE, file('a', '1'), file('a', '2'), DOCKERFILE]));
    await run(tar([DOCKERFILE, file('a', '1'), dir('a'), file('a/b'), dir('a')]));
    await run(tar([symlink('Dockerfile', 'x'), DOCKERFILE]));
    await fails(tar([DOCKERFILE, symlink('Dockerfile', 'elsewhere')]), 'invalid_context', [
      /the Dockerfile path "Dockerfile" is a symlink in the context, not a regular file/,
    ]);
    // ...but a directory is never replaced by a non-directory (its children would silently vanish).
    await fails(tar([DOCKERFILE, dir('d'), file('d/x'), file('d', 'oops')]), 'invalid_context', [
      /entry "d" \(a regular file\) replaces the directory "d"/,
    ]);
    await fails(tar([DOCKERFILE, file('d/x'), symlink('d', '/etc')]), 'invalid_context', [
      /replaces the directory "d"/,
    ]);
  });

  test('a hard link to the Dockerfile counts as the Dockerfile; a hard link to a symlink does not', async () => {
    await run(tar([file('real', 'FROM scratch\n'), hardlink('Dockerfile', 'real')]));
    await fails(tar([symlink('s', 'real'), hardlink('Dockerfile', 's')]), 'invalid_context', [
      /is a symlink in the context/,
    ]);
  });

  test('missing end-of-archive blocks are accepted when the last entry is complete (as GNU tar does)', async () => {
    const noEnd = tar([DOCKERFILE, file('a', 'abc')], { end: false });
    assert.equal((await run(noEnd)).summary.entries, 2);
    assert.equal((await run(Buffer.concat([noEnd, Buffer.alloc(512)]))).summary.entries, 2);
    // Record padding (zeros after the marker, e.g. GNU tar's 10 KiB records) is fine.
    assert.equal((await run(Buffer.concat([tar([DOCKERFILE]), Buffer.alloc(9 * 1024)]))).summary.entries, 1);
  });

  test('a git-archive style PAX global header (comment) is accepted', async () => {
    const archive = tar([
      metaEntry('g', paxData({ comment: 'a'.repeat(40) }), 'pax_global_header'),
      DOCKERFILE,
    ]);
    assert.equal((await run(archive)).summary.entries, 1);
  });
});

describe('createContextValidator: archives from /bin/tar', () => {
  let workdir = '';
  before(async () => {
    workdir = await mkdtemp(path.join(tmpdir(), 'kiln-ctx-'));
    const src = path.join(workdir, 'src');
    await mkdir(path.join(src, 'sub', 'deep'), { recursive: true });
    await writeFile(path.join(src, 'Dockerfile'), 'FROM scratch\nCOPY . /\n');
    await writeFile(path.join(src, 'sub', 'deep', `${'n'.repeat(120)}.txt`), randomBytes(5000));
    await writeFile(path.join(src, 'sub', 'suid'), '#!/bin/sh\n');
    await chmod(path.join(src, 'sub', 'suid'), 0o4755);
    await fsSymlink('../Dockerfile', path.join(src, 'sub', 'link'));
    await link(path.join(src, 'Dockerfile'), path.join(src, 'sub', 'hard'));
    await writeFile(path.join(src, 'héllo wörld.txt'), 'unicode');
    // ustar and v7 cannot store the 120-byte base name: give them a tree without it.
    execFileSync('cp', ['-a', src, path.join(workdir, 'short')]);
    await rm(path.join(workdir, 'short', 'sub', 'deep'), { recursive: true });
  });
  after(() => rm(workdir, { recursive: true, force: true }));

  for (const format of ['gnu', 'posix', 'ustar', 'v7']) {
    test(`tar --format=${format}`, async () => {
      const out = path.join(workdir, `${format}.tar`);
      const tree = format === 'ustar' || format === 'v7' ? 'short' : 'src';
      execFileSync('tar', [`--format=${format}`, '-cf', out, '-C', path.join(workdir, tree), '.'], {
        stdio: 'pipe',
      });
      const bytes = await readFile(out);
      const listed = execFileSync('tar', ['-tf', out]).toString().trim().split('\n').length;
      const { summary, output } = await run(bytes);
      assert.equal(summary.entries, listed);
      assert.ok(output.equals(bytes));
      const gz = await run(gzipSync(bytes));
      assert.equal(gz.summary.sha256, sha256(bytes));
    });
  }
});

describe('createContextValidator: hostile and broken archives', () => {
  test('traversal: ../x, /etc/x, a/../../x (ustar, PAX and GNU names)', async () => {
    await fails(tar([DOCKERFILE, file('../x')]), 'invalid_context', [
      /entry "\.\.\/x" contains a "\.\." component/,
    ]);
    await fails(tar([DOCKERFILE, file('/etc/x')]), 'invalid_context', [
      /entry "\/etc\/x" is an absolute path/,
    ]);
    await fails(tar([DOCKERFILE, file('a/../../x')]), 'invalid_context', [
      /entry "a\/\.\.\/\.\.\/x" contains a "\.\." component/,
    ]);
    // Even `..` that would stay inside is refused: there is no reason for it in a context.
    await fails(tar([DOCKERFILE, file('a/../b')]), 'invalid_context', [
      /"a\/\.\.\/b" contains a "\.\." component/,
    ]);
    await fails(tar([DOCKERFILE, file('x', '', { pax: { path: '../../etc/passwd' } })]), 'invalid_context', [
      /entry "\.\.\/\.\.\/etc\/passwd" contains a "\.\." component/,
    ]);
    await fails(tar([DOCKERFILE, file(`/${'a'.repeat(150)}`, '', { long: 'gnu' })]), 'invalid_context', [
      /is an absolute path/,
    ]);
  });

  test('a symlink pointing outside, then a file written through it, is rejected', async () => {
    // Policy: rejected at upload (no real tool produces entries below a symlink; extraction would have
    // to refuse them anyway), so the user learns at POST time. extract.unit.test.ts covers extraction.
    await fails(
      tar([DOCKERFILE, symlink('a', '/etc'), file('a/passwd', 'root::0:0::/:/bin/sh\n')]),
      'invalid_context',
      [/entry "a\/passwd" would be written through "a", a symlink declared earlier in the archive/],
    );
    await fails(tar([DOCKERFILE, symlink('a', '../..'), dir('a/b'), file('a/b/c')]), 'invalid_context', [
      /through "a", a symlink/,
    ]);
    // The symlink alone is fine.
    await run(tar([DOCKERFILE, symlink('a', '/etc')]));
  });

  test('an entry below a regular file is rejected', async () => {
    await fails(tar([DOCKERFILE, file('f', 'x'), file('f/g', 'y')]), 'invalid_context', [
      /entry "f\/g" is below "f", which is a regular file/,
    ]);
  });

  test('hard links: to /etc/passwd, to ../x, to a later entry, to itself, to a directory', async () => {
    await fails(tar([DOCKERFILE, hardlink('x', '/etc/passwd')]), 'invalid_context', [
      /the target of hard link "x", "\/etc\/passwd" is an absolute path/,
    ]);
    await fails(tar([DOCKERFILE, hardlink('x', '../x')]), 'invalid_context', [
      /target of hard link "x", "\.\.\/x" contains a "\.\." component/,
    ]);
    await fails(tar([DOCKERFILE, hardlink('x', 'later'), file('later')]), 'invalid_context', [
      /hard link "x" points to "later", which is not an earlier entry in the archive/,
    ]);
    await fails(tar([DOCKERFILE, file('x'), hardlink('x', 'x')]), 'invalid_context', [
      /hard link "x" points to itself/,
    ]);
    await fails(tar([DOCKERFILE, dir('d'), hardlink('x', 'd')]), 'invalid_context', [
      /points to the directory "d"/,
    ]);
    await fails(tar([DOCKERFILE, hardlink('x', '')]), 'invalid_context', [
      /hard link "x" has an empty target/,
    ]);
  });

  test('devices and fifos are rejected, naming the entry', async () => {
    await fails(tar([DOCKERFILE, { name: 'dev/null', type: '3' }]), 'invalid_context', [
      /entry "dev\/null" is a character device/,
    ]);
    await fails(tar([DOCKERFILE, { name: 'dev/sda', type: '4' }]), 'invalid_context', [
      /entry "dev\/sda" is a block device/,
    ]);
    await fails(tar([DOCKERFILE, { name: 'pipe', type: '6' }]), 'invalid_context', [
      /entry "pipe" is a FIFO/,
    ]);
    await fails(tar([DOCKERFILE, { name: 'sparse', type: 'S' }]), 'invalid_context', [/GNU sparse file/]);
    await fails(tar([DOCKERFILE, { name: 'odd', type: 'Z' }]), 'invalid_context', [
      /entry "odd" has the unknown type flag "Z"/,
    ]);
    await fails(tar([DOCKERFILE, file('s', '', { pax: { 'GNU.sparse.major': '1' } })]), 'invalid_context', [
      /sparse file/,
    ]);
  });

  test('header-only entries (directories, links) may not carry data', async () => {
    const sneaky = Buffer.concat([header({ name: 'd/', type: '5', size: 512 }), entry(file('hidden', 'x'))]);
    await fails(tar([DOCKERFILE, sneaky]), 'invalid_context', [
      /entry "d" is a directory but declares 512 bytes of data/,
    ]);
  });

  test('gzip bomb: 1 GiB of zeros is stopped after a bounded amount of inflation', async (t) => {
    // 16 gzip members of 64 MiB of zeros each (about 1 MiB compressed), after a header for a 1 GiB file.
    const zeros64 = gzipSync(Buffer.alloc(64 * MiB), { level: 9 });
    const head = gzipSync(header({ name: 'zeros.bin', size: 1024 * MiB }));
    const bomb = Buffer.concat([head, ...Array.from({ length: 16 }, () => zeros64)]);
    assert.ok(bomb.length < 1.1 * MiB);
    for (const input of [bomb, Buffer.concat(Array.from({ length: 16 }, () => zeros64))]) {
      const { stream, result } = createContextValidator({ limits: { maxDecompressionRatio: 100 } });
      const started = Date.now();
      let received = 0;
      const sink = new Writable({
        write(chunk: Buffer, _e, cb) {
          received += chunk.length;
          cb();
        },
      });
      await assertAppError(
        pipeline(chunked(input), stream, sink),
        'context_too_large',
        /decompresses more than 100:1 \(maxDecompressionRatio\)/,
      );
      await assert.rejects(result);
      // Grace (1 MiB) + one 16 KiB inflate chunk; nowhere near the 1 GiB it would expand to.
      assert.ok(stream.uncompressedBytes <= 1 * MiB + 16 * KiB, `inflated ${stream.uncompressedBytes}`);
      assert.ok(received <= stream.uncompressedBytes);
      assert.ok(stream.compressedBytes <= 256 * KiB, `read ${stream.compressedBytes} compressed bytes`);
      assert.ok(Date.now() - started < 2000, `took ${Date.now() - started} ms`);
      t.diagnostic(
        `bomb of ${input.length} bytes: stopped after reading ${stream.compressedBytes} and inflating ${stream.uncompressedBytes} bytes in ${Date.now() - started} ms`,
      );
    }
  });

  test('an honest compressible context below the grace size passes despite a high ratio', async () => {
    const archive = Buffer.concat([tar([DOCKERFILE, file('zeros', Buffer.alloc(512 * KiB))])]);
    const gz = gzipSync(archive);
    assert.ok(archive.length / gz.length > 100);
    await run(gz, { limits: { maxDecompressionRatio: 100 } });
    await fails(gz, 'context_too_large', [/decompresses more than 100:1/], {
      limits: { maxDecompressionRatio: 100, ratioGraceBytes: 0 },
    });
  });

  test('size limits: uncompressed (checked at the header) and compressed', async () => {
    const big = tar([DOCKERFILE, file('big', Buffer.alloc(0), { size: 10 * MiB })], { end: false });
    await fails(
      big,
      'context_too_large',
      [/entry "big" declares 10485760 bytes.*limit of 1048576 bytes uncompressed \(maxUncompressedBytes\)/],
      {
        limits: { maxUncompressedBytes: 1 * MiB },
      },
    );
    const random = gzipSync(tar([DOCKERFILE, file('r', randomBytes(2 * MiB))]));
    await fails(
      random,
      'context_too_large',
      [/compressed context is larger than the limit of 1048576 bytes \(maxCompressedBytes\)/],
      {
        limits: { maxCompressedBytes: 1 * MiB },
      },
    );
    // Many small entries: the running total is checked too.
    const many = tar(Array.from({ length: 300 }, (_, i) => file(`f${i}`, 'x')));
    await fails(many, 'context_too_large', [/larger than the limit of 102400 bytes uncompressed/], {
      limits: { maxUncompressedBytes: 100 * KiB },
    });
  });

  test('truncated archives', async () => {
    const archive = tar([DOCKERFILE, file('data', Buffer.alloc(3000, 1))], { end: false });
    // EOF inside the data of the last entry.
    await fails(archive.subarray(0, 1024 + 512 + 1000), 'invalid_context', [
      /the archive is truncated: entry "data" declares 3000 bytes but only 1000 follow/,
    ]);
    // EOF inside a header.
    await fails(archive.subarray(0, 1024 + 100), 'invalid_context', [
      /truncated: it ends 100 bytes into the header block at offset 1024/,
    ]);
    // EOF in the padding after the data.
    await fails(archive.subarray(0, 1024 + 512 + 3000 + 10), 'invalid_context', [
      /truncated: it ends in the padding after entry "data"/,
    ]);
    // EOF after a PAX header, before its entry.
    await fails(
      Buffer.concat([tar([DOCKERFILE], { end: false }), metaEntry('x', paxData({ path: 'p' }))]),
      'invalid_context',
      [/ends after the PAX extended header at offset 1024, without the entry it describes/],
    );
    // Truncated gzip.
    const gz = gzipSync(tar([DOCKERFILE, file('r', randomBytes(100 * KiB))]));
    await fails(gz.subarray(0, gz.length - 1000), 'invalid_context', [/the gzip stream is truncated/]);
  });

  test('a header checksum mismatch is rejected with its offset', async () => {
    const archive = tar([DOCKERFILE, file('bad', 'x', { checksumDelta: 1 })]);
    await fails(archive, 'invalid_context', [
      /tar header checksum mismatch at offset 1024 \(stored \d+, computed \d+\)/,
    ]);
  });

  test('a lone zero block followed by more entries, and data after the end marker, are rejected', async () => {
    const lone = Buffer.concat([entry(DOCKERFILE), Buffer.alloc(512), entry(file('hidden', 'x'))]);
    await fails(lone, 'invalid_context', [/lone zero block at offset 1024 followed by more headers/]);
    const trailing = Buffer.concat([tar([DOCKERFILE]), entry(file('hidden', 'x'))]);
    await fails(trailing, 'invalid_context', [
      /unexpected data at offset 2048, after the end-of-archive marker/,
    ]);
  });

  test('not an archive: random bytes, short text, other formats, gzip of non-tar, corrupt gzip', async () => {
    const random = randomBytes(4096);
    random[0] = 0x42; // never gzip/zip magic
    await fails(random, 'invalid_context', [/^the context is not a tar or gzip archive/]);
    await fails(Buffer.from('hello'), 'invalid_context', [/not a tar or gzip archive/]);
    await fails(Buffer.from('PK\x03\x04rest-of-zip', 'latin1'), 'unsupported_media_type', [
      /the context is a zip archive; send a tar/,
    ]);
    await fails(Buffer.from([0xfd, 0x37, 0x7a, 0x58, 0x5a, 0x00, 1, 2]), 'unsupported_media_type', [
      /xz-compressed/,
    ]);
    await fails(gzipSync(randomBytes(4096)), 'invalid_context', [
      /the gzip-compressed data is not a tar archive/,
    ]);
    const corrupt = gzipSync(tar([DOCKERFILE]));
    corrupt[20] = (corrupt[20] ?? 0) ^ 0xff;
    await fails(corrupt, 'invalid_context', [/^the gzip data is corrupt: /]);
    const badCrc = gzipSync(tar([DOCKERFILE]));
    badCrc[badCrc.length - 8] = (badCrc[badCrc.length - 8] ?? 0) ^ 0xff;
    await fails(badCrc, 'invalid_context', [/^the gzip data is corrupt: incorrect data check/]);
    await fails(gzipSync(Buffer.alloc(0)), 'invalid_context', [/the archive is empty/]);
  });

  test('zero bytes', async () => {
    await fails(Buffer.alloc(0), 'invalid_context', [/the context is empty \(0 bytes\)/]);
  });

  test('extended attributes are bounded across the whole archive (maxXattrBytes)', async () => {
    // 20 entries of 60 KiB each: every PAX header is within its own limit, their sum is not.
    const entries = Array.from({ length: 20 }, (_, i) =>
      file(`f${i}`, '', { pax: { 'SCHILY.xattr.user.blob': Buffer.alloc(60 * KiB, 1) } }),
    );
    await fails(tar([DOCKERFILE, ...entries]), 'context_too_large', [
      /^the extended attributes kept up to entry "f17" take more than 1048576 bytes \(maxXattrBytes; each entry that has some counts its name and 128 bytes, each attribute its name, value and 64 bytes\)$/,
    ]);
    await run(tar([DOCKERFILE, ...entries.slice(0, 17)]));
    // Tiny attributes on many entries: the worker's cost per entry counts, not only their bytes.
    const many = (n: number, attr: string) =>
      tar([
        DOCKERFILE,
        ...Array.from({ length: n }, (_, i) =>
          file(`m/${i}`, '', { pax: { [`SCHILY.xattr.${attr}`]: '1' } }),
        ),
      ]);
    await fails(many(10_000, 'user.a'), 'context_too_large', [/kept up to entry "m\/\d+"/]);
    // Attributes a context drops are neither kept nor charged (a tar made on macOS has them everywhere).
    await run(many(10_000, 'com.apple.provenance'));
    await run(many(10_000, 'user.overlay.opaque'));
    await fails(tar([DOCKERFILE, file('a', '', { pax: { 'SCHILY.xattr.': 'x' } })]), 'invalid_context', [
      /entry "a" has a PAX xattr record without a name/,
    ]);
    // GNU tar would give every later entry a global header's attributes, Go's reader none.
    await fails(
      tar([metaEntry('g', paxData({ 'SCHILY.xattr.user.a': '1' })), DOCKERFILE]),
      'invalid_context',
      [
        /sets "SCHILY\.xattr\.user\.a"; global path, linkpath, size, sparse and xattr records are not supported/,
      ],
    );
  });

  test('a 1 MiB PAX header is refused at its header, before its data is read', async () => {
    const huge = Buffer.concat([metaEntry('x', paxData({ comment: 'x'.repeat(MiB) })), entry(DOCKERFILE)]);
    const { stream, result } = createContextValidator();
    await assertAppError(
      pipeline(chunked(huge), stream, new Writable({ write: (_c, _e, cb) => cb() })),
      'invalid_context',
      /the PAX extended header at offset 0 is 10485\d\d bytes, more than the limit of 65536 bytes \(maxPaxHeaderBytes\)/,
    );
    await assert.rejects(result);
    assert.ok(stream.compressedBytes <= 64 * KiB, `read ${stream.compressedBytes}`);
    // Several PAX headers for one entry add up.
    const split = tar([
      metaEntry('x', paxData({ a: 'x'.repeat(40 * KiB) })),
      metaEntry('x', paxData({ b: 'x'.repeat(40 * KiB) })),
      DOCKERFILE,
    ]);
    await fails(split, 'invalid_context', [/after 409\d\d bytes of earlier PAX headers for the same entry/]);
    await fails(tar([metaEntry('g', paxData({ comment: 'x'.repeat(MiB) })), DOCKERFILE]), 'invalid_context', [
      /PAX global header at offset 0 is 10485\d\d bytes/,
    ]);
    await fails(tar([metaEntry('g', paxData({ path: 'evil' })), DOCKERFILE]), 'invalid_context', [
      /global header at offset 0 sets "path"/,
    ]);
  });

  test('malformed PAX records and conflicting long names', async () => {
    await fails(tar([metaEntry('x', Buffer.from('99 path=x\n')), DOCKERFILE]), 'invalid_context', [
      /malformed PAX header at offset 0/,
    ]);
    await fails(tar([metaEntry('x', Buffer.from('garbage')), DOCKERFILE]), 'invalid_context', [
      /malformed PAX header/,
    ]);
    await fails(tar([file('x', '', { pax: { size: 'abc' } }), DOCKERFILE]), 'invalid_context', [
      /invalid PAX size record "abc"/,
    ]);
    const both = Buffer.concat([
      metaEntry('L', Buffer.from('gnu-name\0')),
      metaEntry('x', paxData({ path: 'pax-name' })),
      header({ name: 'x', size: 0 }),
    ]);
    await fails(tar([DOCKERFILE, both]), 'invalid_context', [/both a PAX path and a GNU long name/]);
    // PAX size overrides the header's size.
    const sized = Buffer.concat([
      metaEntry('x', paxData({ size: '3' })),
      header({ name: 'f', size: 0 }),
      Buffer.from('abc'),
      Buffer.alloc(509),
    ]);
    assert.equal((await run(tar([DOCKERFILE, sized]))).summary.entries, 2);
  });

  test('100k tiny entries with maxEntries 50k fail at entry 50001', async () => {
    const blocks: Buffer[] = [entry(DOCKERFILE)];
    for (let i = 0; i < 100_000; i++) blocks.push(header({ name: `f/${i}`, size: 0 }));
    const archive = tar(blocks);
    const error = await fails(
      archive,
      'context_too_large',
      [/the archive has more than 50000 entries \(maxEntries\)/],
      {
        limits: { maxEntries: 50_000 },
      },
    );
    assert.ok(error);
    // Within the default limit the same archive passes, quickly.
    const started = Date.now();
    assert.equal((await run(archive)).summary.entries, 100_001);
    assert.ok(Date.now() - started < 5000);
  });

  test('name length: 4000 bytes passes with the 4096 limit, 5000 is rejected (PAX and GNU)', async () => {
    const name = (n: number) => {
      const parts: string[] = [];
      let total = 0;
      while (total < n) {
        const len = Math.min(200, n - total - (parts.length ? 1 : 0));
        parts.push('a'.repeat(Math.max(1, len)));
        total = parts.join('/').length;
      }
      return parts.join('/');
    };
    const n4000 = name(4000);
    const n5000 = name(5000);
    assert.equal(n4000.length, 4000);
    assert.equal(n5000.length, 5000);
    for (const long of ['pax', 'gnu'] as const) {
      await run(tar([DOCKERFILE, file(n4000, 'x', { long })]), { limits: { maxNameBytes: 4096 } });
      await run(tar([DOCKERFILE, symlink('s', n4000, { long })]), { limits: { maxNameBytes: 4096 } });
    }
    await fails(tar([DOCKERFILE, file(n5000, 'x')]), 'invalid_context', [
      /the name of the entry at offset \d+ is 5000 bytes, longer than the limit of 4096 bytes \(maxNameBytes\): "aaaa/,
    ]);
    await fails(tar([DOCKERFILE, file(n5000, 'x', { long: 'gnu' })]), 'invalid_context', [
      /the GNU long-name header at offset 1024 holds a 5001-byte name, longer than the limit of 4096 bytes \(maxNameBytes\)/,
    ]);
    await fails(tar([DOCKERFILE, symlink('s', n5000)]), 'invalid_context', [
      /the link target of "s" is 5000 bytes, longer than the limit of 4096/,
    ]);
  });

  test('a path component over 255 bytes (NAME_MAX) is rejected: the worker could not create it', async () => {
    await run(tar([DOCKERFILE, file(`d/${'a'.repeat(255)}`, 'x')]));
    await fails(tar([DOCKERFILE, file(`d/${'a'.repeat(256)}`, 'x')]), 'invalid_context', [
      /has a 256-byte path component; file names are limited to 255 bytes/,
    ]);
  });

  test('non-UTF-8 names are rejected, showing the bytes', async () => {
    const latin1 = Buffer.from('caf\xe9', 'latin1');
    await fails(tar([DOCKERFILE, file(latin1, 'x')]), 'invalid_context', [
      /the name of the entry at offset 1024 is not valid UTF-8: "caf\\xe9"/,
    ]);
    await fails(
      tar([DOCKERFILE, file('x', '', { pax: { path: Buffer.from([0x61, 0xff, 0x62]) } })]),
      'invalid_context',
      [/not valid UTF-8: "a\\xffb"/],
    );
    await fails(tar([DOCKERFILE, symlink('s', Buffer.from([0xc3]))]), 'invalid_context', [
      /the link target of "s" is not valid UTF-8: "\\xc3"/,
    ]);
    await fails(tar([DOCKERFILE, file('x', '', { pax: { hdrcharset: 'BINARY' } })]), 'invalid_context', [
      /hdrcharset=BINARY; names must be UTF-8/,
    ]);
  });

  test('Dockerfile missing, a directory, a symlink', async () => {
    await fails(tar([file('README', 'x')]), 'invalid_context', [
      /^no Dockerfile at "Dockerfile" in the context$/,
    ]);
    await fails(tar([]), 'invalid_context', [/no Dockerfile at "Dockerfile"/]);
    await fails(tar([dir('Dockerfile/'), file('Dockerfile/x')]), 'invalid_context', [
      /the Dockerfile path "Dockerfile" is a directory in the context, not a regular file/,
    ]);
    await fails(tar([file('other', 'FROM scratch'), symlink('Dockerfile', 'other')]), 'invalid_context', [
      /the Dockerfile path "Dockerfile" is a symlink in the context, not a regular file/,
    ]);
    // Implied directory: "sub/Dockerfile/x" makes "sub/Dockerfile" a directory.
    await fails(tar([file('sub/Dockerfile/x')]), 'invalid_context', [/"sub\/Dockerfile" is a directory/], {
      dockerfilePath: 'sub/Dockerfile',
    });
  });

  test('an aborted upload rejects result', async () => {
    const { stream, result } = createContextValidator();
    stream.write(entry(DOCKERFILE));
    stream.destroy();
    await assertAppError(result, 'invalid_context', /aborted before it ended/);
  });
});

describe('createContextValidator: backpressure', () => {
  /** Generates `size` bytes lazily, counting what was pulled. */
  function counting(buffer: Buffer, chunkSize = 64 * KiB) {
    const source = chunked(buffer, chunkSize) as Readable & { produced: number };
    source.produced = 0;
    source.on('data', (c: Buffer) => {
      source.produced += c.length;
    });
    source.pause();
    return source;
  }

  for (const compressed of [false, true]) {
    test(`a slow consumer keeps the validator's buffering bounded (${compressed ? 'gzip' : 'tar'})`, async (t) => {
      // Compressible but not bomb-like text (about 2:1), 32 MiB of tar.
      const alphabet = Buffer.from('0123456789abcdef');
      const body = Buffer.alloc(32 * MiB);
      const seed = randomBytes(body.length);
      for (let i = 0; i < body.length; i++) body[i] = alphabet[(seed[i] ?? 0) & 15] ?? 0;
      const archive = tar([DOCKERFILE, file('body.txt', body)]);
      const input = compressed ? gzipSync(archive, { level: 1 }) : archive;
      const source = counting(input);
      const { stream, result } = createContextValidator();
      let consumed = 0;
      let maxAhead = 0;
      let stalled: { produced: number; inflated: number } | null = null;
      const sink = new Writable({
        highWaterMark: 16 * KiB,
        async write(chunk: Buffer, _e, cb) {
          if (!stalled) {
            await delay(300); // a consumer that stops for a while
            stalled = { produced: source.produced, inflated: stream.uncompressedBytes };
          } else if (consumed % MiB < chunk.length) {
            await delay(1);
          }
          consumed += chunk.length;
          maxAhead = Math.max(maxAhead, stream.uncompressedBytes - consumed);
          cb();
        },
      });
      await pipeline(source, stream, sink);
      const summary = await result;
      assert.equal(consumed, archive.length);
      assert.equal(summary.sha256, sha256(archive));
      assert.ok(stalled);
      const { produced, inflated } = stalled as { produced: number; inflated: number };
      // While the consumer sat still, the source was not drained into memory...
      assert.ok(produced <= 1 * MiB, `source produced ${produced} bytes during the stall`);
      assert.ok(inflated <= 1 * MiB, `validator produced ${inflated} bytes during the stall`);
      // ...and at no point did the validator run more than ~1 MiB ahead of the consumer.
      assert.ok(maxAhead <= 1 * MiB, `validator ran ${maxAhead} bytes ahead`);
      t.diagnostic(
        `stall: source gave ${produced} bytes, validator produced ${inflated}; max ahead of consumer ${maxAhead}`,
      );
    });
  }
});

describe('createContextValidator: the Dockerfile frontend directive', () => {
  test('is read from the Dockerfile entry (the last one of that name), in small chunks too', async () => {
    const archive = tar([
      file('other', '# syntax=not/this\n'),
      file('Dockerfile', 'FROM scratch\n'),
      file('Dockerfile', '# syntax=docker/dockerfile:1\nFROM scratch\n'),
    ]);
    for (const chunkSize of [undefined, 7]) {
      const { summary } = await run(gzipSync(archive), {}, chunkSize);
      assert.deepEqual(summary.frontend, { kind: 'image', image: 'docker/dockerfile:1' });
    }
    const plain = await run(tar([file('Dockerfile', 'FROM scratch\n# syntax=late/one\n')]));
    assert.deepEqual(plain.summary.frontend, { kind: 'none' });
  });
});
