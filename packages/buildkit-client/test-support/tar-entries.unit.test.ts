import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { readFile, rm } from 'node:fs/promises';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { promisify } from 'node:util';
import { type BuildContext, makeContext } from './context.js';
import { compareTarEntries, readTarEntries, type TarEntry } from './tar-entries.js';

const run = promisify(execFile);
const sha256 = (data: string | Buffer): string => createHash('sha256').update(data).digest('hex');

// 60 + 1 + 60 bytes: over the 100-byte name field, yet splittable into ustar's prefix.
const LONG_DIR = 'p'.repeat(60);
const LONG_PATH = `${LONG_DIR}/${'q'.repeat(60)}`;
// Spans many read-stream chunks and ends mid-block.
const BIG = randomBytes(3 * 1024 * 1024 + 123);
const MTIME = 1_700_000_000;

async function gnuTar(dir: string, format: 'gnu' | 'posix' | 'ustar', out: string): Promise<void> {
  await run('/bin/tar', [
    '-C',
    dir,
    '-cf',
    out,
    `--format=${format}`,
    '--sort=name',
    '--numeric-owner',
    '--owner=1234',
    '--group=5678',
    `--mtime=@${MTIME}`,
    '.',
  ]);
}

function expectedEntries(withLongLink: boolean): Omit<TarEntry, 'mtime'>[] {
  const empty = sha256('');
  const base = { uid: 1234, gid: 5678, linkname: '', size: 0, sha256: empty, xattrs: [] };
  return [
    { ...base, name: '.', type: 'dir', mode: 0o700 }, // mkdtemp's mode
    { ...base, name: 'big.bin', type: 'file', mode: 0o644, size: BIG.length, sha256: sha256(BIG) },
    { ...base, name: 'hl-target.txt', type: 'file', mode: 0o644, size: 6, sha256: sha256('shared') },
    { ...base, name: 'hl.txt', type: 'hardlink', mode: 0o644, linkname: 'hl-target.txt' },
    {
      ...base,
      name: 'link',
      type: 'symlink',
      mode: 0o777,
      linkname: withLongLink ? `../${LONG_PATH}` : 'secret.txt',
    },
    { ...base, name: LONG_DIR, type: 'dir', mode: 0o755 },
    { ...base, name: LONG_PATH, type: 'file', mode: 0o644, size: 4, sha256: sha256('long') },
    { ...base, name: 'secret.txt', type: 'file', mode: 0o640, size: 7, sha256: sha256('secret\n') },
  ];
}

describe('readTarEntries', () => {
  let context: BuildContext;
  let longLinkContext: BuildContext;
  // Explicit modes keep the expectations independent of the umask.
  const files = {
    'big.bin': { content: BIG, mode: 0o644 },
    'hl-target.txt': { content: 'shared', mode: 0o644 },
    'hl.txt': { hardlinkTo: 'hl-target.txt' },
    [LONG_DIR]: { dir: true, mode: 0o755 },
    [LONG_PATH]: { content: 'long', mode: 0o644 },
    'secret.txt': { content: 'secret\n', mode: 0o640 },
  } as const;

  before(async () => {
    context = await makeContext({ ...files, link: { symlink: 'secret.txt' } });
    // ustar cannot store a link target over 100 bytes, so only gnu/posix get this one.
    longLinkContext = await makeContext({ ...files, link: { symlink: `../${LONG_PATH}` } });
  });
  after(async () => {
    await context.cleanup();
    await longLinkContext.cleanup();
  });

  for (const [format, longLink] of [
    ['gnu', true],
    ['posix', true],
    ['ustar', false],
  ] as const) {
    test(`parses GNU tar --format=${format}`, async () => {
      const source = longLink ? longLinkContext : context;
      const archive = `${source.dir}.${format}.tar`;
      try {
        await gnuTar(source.dir, format, archive);
        const entries = await readTarEntries(archive);
        assert.deepEqual(
          entries.map(({ mtime: _, ...rest }) => rest),
          expectedEntries(longLink),
        );
        for (const entry of entries) assert.equal(Math.trunc(entry.mtime), MTIME, entry.name);
        assert.deepEqual(await readTarEntries(await readFile(archive)), entries);
      } finally {
        await rm(archive, { force: true });
      }
    });
  }

  test('reads extended attributes (GNU tar --xattrs)', async () => {
    const archive = `${context.dir}.xattrs.tar`;
    try {
      await run('setfattr', ['-n', 'user.kiln', '-v', 'v1', path.join(context.dir, 'secret.txt')]);
      await run('/bin/tar', ['-C', context.dir, '-cf', archive, '--xattrs', 'secret.txt', 'big.bin']);
      const entries = await readTarEntries(archive);
      assert.deepEqual(
        entries.map((e) => [e.name, e.xattrs]),
        [
          ['secret.txt', ['user.kiln=v1']],
          ['big.bin', []],
        ],
      );
    } finally {
      await run('setfattr', ['-x', 'user.kiln', path.join(context.dir, 'secret.txt')]);
      await rm(archive, { force: true });
    }
  });

  test('rejects a truncated archive', async () => {
    const archive = `${context.dir}.truncated.tar`;
    try {
      await gnuTar(context.dir, 'gnu', archive);
      const bytes = await readFile(archive);
      await assert.rejects(readTarEntries(bytes.subarray(0, 2048 + 100)), /truncated/);
    } finally {
      await rm(archive, { force: true });
    }
  });
});

describe('compareTarEntries', () => {
  const entry = (name: string, extra: Partial<TarEntry> = {}): TarEntry => ({
    name,
    type: 'file',
    mode: 0o644,
    uid: 0,
    gid: 0,
    linkname: '',
    size: 0,
    sha256: sha256(''),
    mtime: 1,
    xattrs: [],
    ...extra,
  });

  test('is empty for equal listings and ignores mtime by default', () => {
    assert.deepEqual(compareTarEntries([entry('a')], [entry('a', { mtime: 2 })]), []);
  });

  test('reports field, membership and order differences', () => {
    const a = [entry('x'), entry('y'), entry('gone')];
    const b = [entry('y', { mode: 0o600, uid: 1, xattrs: ['user.a=1'] }), entry('x'), entry('new')];
    assert.deepEqual(compareTarEntries(a, b), [
      'gone: only in a',
      'new: only in b',
      'order differs from position 0: a has x, b has y',
      'y: mode 0644 != 0600',
      'y: uid 0 != 1',
      'y: xattrs  != user.a=1',
    ]);
  });

  test('compares mtimes on request, skipping directories unless asked', () => {
    const dir = (mtime: number): TarEntry => entry('d', { type: 'dir', mtime });
    assert.deepEqual(
      compareTarEntries([entry('f'), dir(1)], [entry('f', { mtime: 5 }), dir(9)], { compareMtime: true }),
      ['f: mtime 1 != 5'],
    );
    assert.deepEqual(compareTarEntries([dir(1)], [dir(9)], { compareMtime: true, ignoreDirMtime: false }), [
      'd: mtime 1 != 9',
    ]);
  });
});
