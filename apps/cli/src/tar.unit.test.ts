// The tar writer, read back by GNU tar (/bin/tar): types, modes, owners, links, long and
// non-ASCII names, PAX records and mtimes.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { lstat, mkdtemp, readFile, readlink, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import {
  BLOCK,
  END_OF_ARCHIVE,
  encodeHeader,
  padding,
  paxRecord,
  paxTime,
  splitUstarPath,
  type TarHeader,
} from './tar.js';

const T = 1_700_000_000n * 1_000_000_000n; // 2023-11-14T22:13:20Z

interface Entry extends Partial<TarHeader> {
  name: string;
  data?: string | Buffer;
}

function archive(entries: Entry[], subsecondMtime = true): Buffer {
  const parts: Buffer[] = [];
  for (const e of entries) {
    const data = Buffer.from(e.data ?? '');
    const type = e.type ?? 'file';
    parts.push(
      encodeHeader(
        {
          name: e.name,
          type,
          mode: e.mode ?? (type === 'dir' ? 0o755 : 0o644),
          uid: e.uid ?? 0,
          gid: e.gid ?? 0,
          size: type === 'file' ? data.length : 0,
          mtimeNs: e.mtimeNs ?? T,
          ...(e.linkname !== undefined ? { linkname: e.linkname } : {}),
        },
        { subsecondMtime },
      ),
    );
    if (type === 'file') parts.push(data, padding(data.length));
  }
  parts.push(END_OF_ARCHIVE);
  return Buffer.concat(parts);
}

/** `tar -tv` lines: mode owner size date time name, in UTC with full time and numeric owners. */
function listing(tar: Buffer): string[] {
  return execFileSync('/bin/tar', ['--utc', '--full-time', '--numeric-owner', '-tvf', '-'], {
    input: tar,
    encoding: 'utf8',
  })
    .trimEnd()
    .split('\n')
    .map((l) => l.replace(/ +/g, ' '));
}

let work = '';
before(async () => {
  work = await mkdtemp(path.join(tmpdir(), 'kiln-cli-tar-'));
});
after(async () => {
  await rm(work, { recursive: true, force: true });
});

async function extract(tar: Buffer, name: string): Promise<string> {
  const dir = path.join(work, name);
  execFileSync('mkdir', ['-p', dir]);
  execFileSync('/bin/tar', ['--same-permissions', '--numeric-owner', '-xf', '-', '-C', dir], { input: tar });
  return dir;
}

describe('tar writer, read back with /bin/tar', () => {
  test('types, modes (setuid/setgid/sticky), owners 0:0, sizes, links', async () => {
    const tar = archive([
      { name: 'dir/', type: 'dir', mode: 0o755 },
      { name: 'dir/file.txt', data: 'hello\n', mode: 0o644 },
      { name: 'dir/run.sh', data: '#!/bin/sh\n', mode: 0o755 },
      { name: 'suid', data: 'x', mode: 0o4755 },
      { name: 'sgid/', type: 'dir', mode: 0o2750 },
      { name: 'tmp/', type: 'dir', mode: 0o1777 },
      { name: 'ro', data: 'r', mode: 0o444 },
      { name: 'link', type: 'symlink', mode: 0o777, linkname: 'dir/file.txt' },
      { name: 'abs-link', type: 'symlink', mode: 0o777, linkname: '/etc/passwd' },
      { name: 'hard', type: 'hardlink', mode: 0o644, linkname: 'dir/file.txt' },
      { name: 'owned', data: 'o', uid: 1234, gid: 5678 },
      { name: 'empty', data: '' },
    ]);
    assert.equal(tar.length % BLOCK, 0);
    assert.deepEqual(listing(tar), [
      'drwxr-xr-x 0/0 0 2023-11-14 22:13:20 dir/',
      '-rw-r--r-- 0/0 6 2023-11-14 22:13:20 dir/file.txt',
      '-rwxr-xr-x 0/0 10 2023-11-14 22:13:20 dir/run.sh',
      '-rwsr-xr-x 0/0 1 2023-11-14 22:13:20 suid',
      'drwxr-s--- 0/0 0 2023-11-14 22:13:20 sgid/',
      'drwxrwxrwt 0/0 0 2023-11-14 22:13:20 tmp/',
      '-r--r--r-- 0/0 1 2023-11-14 22:13:20 ro',
      'lrwxrwxrwx 0/0 0 2023-11-14 22:13:20 link -> dir/file.txt',
      'lrwxrwxrwx 0/0 0 2023-11-14 22:13:20 abs-link -> /etc/passwd',
      'hrw-r--r-- 0/0 0 2023-11-14 22:13:20 hard link to dir/file.txt',
      '-rw-r--r-- 1234/5678 1 2023-11-14 22:13:20 owned',
      '-rw-r--r-- 0/0 0 2023-11-14 22:13:20 empty',
    ]);
    const dir = await extract(tar, 'types');
    assert.equal(await readFile(path.join(dir, 'dir/file.txt'), 'utf8'), 'hello\n');
    assert.equal(await readlink(path.join(dir, 'link')), 'dir/file.txt');
    assert.equal(
      (await lstat(path.join(dir, 'hard'))).ino,
      (await lstat(path.join(dir, 'dir/file.txt'))).ino,
    );
    assert.equal((await lstat(path.join(dir, 'suid'))).mode & 0o7777, 0o4755);
    assert.equal((await lstat(path.join(dir, 'tmp'))).mode & 0o7777, 0o1777);
  });

  test('names: 100 bytes in the name field, longer ASCII split into prefix, else PAX path; non-ASCII via PAX', async () => {
    const n100 = 'a'.repeat(100);
    const split = `${'p'.repeat(80)}/${'q'.repeat(60)}/${'r'.repeat(90)}.txt`;
    const long = `${Array.from({ length: 6 }, (_, i) => `${i}`.repeat(60)).join('/')}/deep.txt`;
    const unicode = 'héllo wörld/ファイル.txt';
    const longTarget = `../${'t'.repeat(150)}`;
    const tar = archive([
      { name: n100, data: '100' },
      { name: split, data: 'split' },
      { name: long, data: 'long' },
      { name: unicode, data: 'unicode' },
      { name: 'long-link', type: 'symlink', mode: 0o777, linkname: longTarget },
      { name: 'hard-to-long', type: 'hardlink', linkname: long },
    ]);
    // The split name is stored without any extended header, like Go and GNU tar do.
    const splitOnly = archive([{ name: split, data: 'split' }]);
    assert.equal(splitOnly.indexOf('path='), -1);
    assert.equal(splitOnly.subarray(345, 345 + 141).toString(), `${'p'.repeat(80)}/${'q'.repeat(60)}`);
    assert.deepEqual(
      listing(tar).map((l) => l.split(' ').slice(5).join(' ')),
      [n100, split, long, unicode, `long-link -> ${longTarget}`, `hard-to-long link to ${long}`],
    );
    const dir = await extract(tar, 'names');
    for (const [name, content] of [
      [n100, '100'],
      [split, 'split'],
      [long, 'long'],
      [unicode, 'unicode'],
    ] as const) {
      assert.equal(await readFile(path.join(dir, name), 'utf8'), content, name);
    }
    assert.equal(await readlink(path.join(dir, 'long-link')), longTarget);
    assert.equal((await lstat(path.join(dir, 'hard-to-long'))).ino, (await lstat(path.join(dir, long))).ino);
  });

  test('mtimes: sub-second in a PAX record (or truncated), pre-1970 and big ids through PAX', async () => {
    const frac = T + 123_456_789n;
    const tar = archive([
      { name: 'frac', data: 'f', mtimeNs: frac },
      { name: 'whole', data: 'w', mtimeNs: T },
      { name: 'old', data: 'o', mtimeNs: -86_400n * 1_000_000_000n },
      { name: 'bigid', data: 'b', uid: 3_000_000, gid: 4_000_000 },
    ]);
    assert.deepEqual(listing(tar), [
      '-rw-r--r-- 0/0 1 2023-11-14 22:13:20.123456789 frac',
      '-rw-r--r-- 0/0 1 2023-11-14 22:13:20 whole',
      '-rw-r--r-- 0/0 1 1969-12-31 00:00:00 old',
      '-rw-r--r-- 3000000/4000000 1 2023-11-14 22:13:20 bigid',
    ]);
    // No PAX header where ustar is enough.
    assert.equal(archive([{ name: 'whole', data: 'w' }]).length, 3 * BLOCK + END_OF_ARCHIVE.length - BLOCK);
    const truncated = archive([{ name: 'frac', data: 'f', mtimeNs: frac }], false);
    assert.deepEqual(listing(truncated), ['-rw-r--r-- 0/0 1 2023-11-14 22:13:20 frac']);
    const dir = await extract(tar, 'mtimes');
    const st = await lstat(path.join(dir, 'frac'), { bigint: true });
    assert.equal(st.mtimeNs, frac);
  });

  test('a size of 8 GiB or more goes into a PAX size record', () => {
    const header = encodeHeader({
      name: 'huge',
      type: 'file',
      mode: 0o644,
      uid: 0,
      gid: 0,
      size: 2 ** 33,
      mtimeNs: T,
    });
    assert.equal(header.length, 3 * BLOCK);
    assert.match(header.subarray(BLOCK, 2 * BLOCK).toString('latin1'), /^\d+ size=8589934592\n/);
  });

  test('PAX records count their own length, across a digit boundary too', () => {
    for (let n = 80; n < 1100; n++) {
      const record = paxRecord('path', 'x'.repeat(n));
      assert.equal(Number(record.slice(0, record.indexOf(' '))), Buffer.byteLength(record), `n=${n}`);
    }
    assert.equal(paxRecord('path', 'é'), '11 path=é\n'); // é is two bytes
    assert.equal(paxTime(T + 500_000_000n), '1700000000.5');
    assert.equal(paxTime(T), '1700000000');
    assert.equal(paxTime(-1_500_000_000n), '-1.5');
  });

  test("splitUstarPath follows Go's rules", () => {
    assert.equal(splitUstarPath('a'.repeat(100)), undefined);
    assert.deepEqual(splitUstarPath(`${'a'.repeat(50)}/${'b'.repeat(60)}`), ['a'.repeat(50), 'b'.repeat(60)]);
    assert.equal(splitUstarPath(`${'a'.repeat(10)}/${'b'.repeat(101)}`), undefined); // name part too long
    assert.equal(splitUstarPath(`${'a'.repeat(156)}/b`), undefined); // prefix too long
    assert.equal(splitUstarPath(`é${'a'.repeat(120)}/b`), undefined); // not ASCII
  });
});
