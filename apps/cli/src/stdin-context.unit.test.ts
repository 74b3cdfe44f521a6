// What stdin holds, told apart as docker does: gzip or a tar header is an archive (streamed on
// whole), other compressions and a terminal are refused naming what was wrong, the rest is a
// Dockerfile.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { PassThrough } from 'node:stream';
import { test } from 'node:test';
import { gzipSync } from 'node:zlib';
import { readAll } from './io.js';
import { isTarHeader, MAX_STDIN_DOCKERFILE, readStdinContext } from './stdin-context.js';

const stdinOf = (...chunks: Buffer[]) => {
  const s = new PassThrough();
  for (const c of chunks) s.write(c);
  s.end();
  return s;
};
const TAR = execFileSync('tar', ['-cf', '-', '-C', '/etc', 'hostname']);

test('a tar and a gzip-compressed tar stream through byte for byte, in small chunks too', async () => {
  for (const [bytes, gzip] of [
    [TAR, false],
    [gzipSync(TAR), true],
  ] as const) {
    const chunks = [];
    for (let i = 0; i < bytes.length; i += 100) chunks.push(bytes.subarray(i, i + 100));
    const r = await readStdinContext(stdinOf(...chunks));
    assert.equal(r.kind, 'archive');
    if (r.kind !== 'archive') return;
    assert.equal(r.gzip, gzip);
    assert.ok((await readAll(r.body)).equals(bytes));
  }
});

test('anything else is the Dockerfile', async () => {
  const r = await readStdinContext(stdinOf(Buffer.from('FROM scratch\n')));
  assert.deepEqual(r, { kind: 'dockerfile', data: Buffer.from('FROM scratch\n') });
  const block = Buffer.alloc(512, 'x');
  assert.equal(isTarHeader(block), false);
  assert.equal(isTarHeader(TAR.subarray(0, 512)), true);
});

test('refused, naming what was wrong (exit 2)', async () => {
  const cases: Array<[Parameters<typeof readStdinContext>[0], RegExp]> = [
    [Object.assign(stdinOf(), { isTTY: true }), /stdin is a terminal; pipe the context into it/],
    [stdinOf(), /stdin is empty/],
    [stdinOf(Buffer.from('BZh91AY&SY')), /stdin is bzip2-compressed.*bzip2 -dc/],
    [stdinOf(Buffer.from([0xfd, 0x37, 0x7a, 0x58, 0x5a, 0x00, 1])), /stdin is xz-compressed/],
    [stdinOf(Buffer.from([0x28, 0xb5, 0x2f, 0xfd, 0])), /stdin is zstd-compressed/],
    [stdinOf(Buffer.alloc(MAX_STDIN_DOCKERFILE + 1, 'a')), /not a tar or gzip archive, and at over/],
  ];
  for (const [stdin, message] of cases) {
    await assert.rejects(readStdinContext(stdin), (err: Error & { exitCode?: number }) => {
      assert.match(err.message, message);
      assert.equal(err.exitCode, 2);
      return true;
    });
  }
});
