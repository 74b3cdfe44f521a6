import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import {
  chmod,
  chown,
  symlink as fsSymlink,
  link,
  lstat,
  lutimes,
  mkdir,
  mkdtemp,
  readdir,
  readFile,
  readlink,
  rm,
  utimes,
  writeFile,
} from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { Readable } from 'node:stream';
import { after, before, beforeEach, describe, test } from 'node:test';
import { extractContext } from './index.js';
import {
  assertAppError,
  chunked,
  DOCKERFILE,
  dir,
  file,
  hardlink,
  header,
  symlink,
  tar,
} from './test-helpers.js';

const isRoot = process.getuid?.() === 0;
let work = '';
let dest = '';
let outside = '';
let counter = 0;

before(async () => {
  work = await mkdtemp(path.join(tmpdir(), 'kiln-extract-'));
});
after(async () => {
  execFileSync('chmod', ['-R', 'u+w', work]); // the 0555 directories, when not running as root
  await rm(work, { recursive: true, force: true });
});
beforeEach(async () => {
  counter++;
  dest = path.join(work, `dest-${counter}`);
  outside = path.join(work, `outside-${counter}`);
  await mkdir(outside);
});

const listing = async (p: string) => (await readdir(p)).sort();

/**
 * type, mode, size, content hash, mtime, link target, owner of every path below `root`, plus
 * hardlink groups; with `permissions` (an extraction's), the modes as the sender sends them.
 */
async function describeTree(root: string, permissions?: ReadonlyMap<string, number>) {
  const out: Record<string, string> = {};
  const inodes = new Map<number, string[]>();
  const walk = async (rel: string) => {
    for (const name of (await readdir(path.join(root, rel))).sort()) {
      const r = rel ? `${rel}/${name}` : name;
      const abs = path.join(root, r);
      const st = await lstat(abs);
      const type = st.isDirectory() ? 'dir' : st.isSymbolicLink() ? 'symlink' : 'file';
      let extra = '';
      if (type === 'file') {
        extra = createHash('sha256')
          .update(await readFile(abs))
          .digest('hex')
          .slice(0, 12);
        if (st.nlink > 1) inodes.set(st.ino, [...(inodes.get(st.ino) ?? []), r]);
      }
      if (type === 'symlink') extra = await readlink(abs);
      const sent = permissions?.get(r);
      const bits = sent === undefined ? st.mode & 0o7777 : (st.mode & 0o7000) | sent;
      const mode = type === 'symlink' ? '' : bits.toString(8);
      out[r] =
        `${type} ${mode} ${type === 'file' ? st.size : ''} ${extra} mtime=${Math.floor(st.mtimeMs / 1000)} ${st.uid}:${st.gid}`;
      if (type === 'dir') await walk(r);
    }
  };
  await walk('');
  return { entries: out, hardlinks: [...inodes.values()].map((group) => group.join(' = ')).sort() };
}

describe('extractContext: round trip of archives made by /bin/tar', () => {
  let src = '';
  before(async () => {
    src = path.join(work, 'src');
    const t = 1_600_000_000;
    await mkdir(path.join(src, 'sub', 'deep'), { recursive: true });
    await writeFile(path.join(src, 'Dockerfile'), 'FROM scratch\nCOPY . /\n');
    await writeFile(path.join(src, 'sub', 'deep', `${'n'.repeat(120)}.txt`), Buffer.alloc(300_000, 7));
    await writeFile(path.join(src, 'sub', 'suid'), '#!/bin/sh\n');
    await chmod(path.join(src, 'sub', 'suid'), 0o4755);
    await writeFile(path.join(src, 'readonly'), 'ro');
    await chmod(path.join(src, 'readonly'), 0o444);
    await mkdir(path.join(src, 'sticky'));
    await chmod(path.join(src, 'sticky'), 0o1777);
    await mkdir(path.join(src, 'setgid'));
    await chmod(path.join(src, 'setgid'), 0o2750);
    await mkdir(path.join(src, 'locked'));
    await writeFile(path.join(src, 'locked', 'inside'), 'x');
    await chmod(path.join(src, 'locked'), 0o555);
    await fsSymlink('../Dockerfile', path.join(src, 'sub', 'rel-link'));
    await fsSymlink('/etc/passwd', path.join(src, 'abs-link'));
    await link(path.join(src, 'Dockerfile'), path.join(src, 'sub', 'hard'));
    await writeFile(path.join(src, 'héllo wörld.txt'), 'unicode');
    if (isRoot) await chown(path.join(src, 'sub', 'deep'), 1234, 5678);
    if (isRoot) await chown(path.join(src, 'readonly'), 4321, 8765);
    // Fixed mtimes, deepest first so parents keep theirs.
    for (const p of ['sub/deep', 'sub/rel-link', 'abs-link', 'sub', 'sticky', 'setgid', 'locked', '.']) {
      const abs = path.join(src, p);
      if ((await lstat(abs)).isSymbolicLink()) await lutimes(abs, t, t);
      else await utimes(abs, t, t);
    }
  });

  for (const format of ['gnu', 'posix']) {
    test(`tar --format=${format}: same tree, modes (setuid/setgid/sticky kept), mtimes, links, owners`, async () => {
      const archive = execFileSync('tar', [`--format=${format}`, '-cf', '-', '-C', src, '.'], {
        maxBuffer: 64 << 20,
      });
      const summary = await extractContext(chunked(archive, 10_000), dest);
      assert.ok(summary.entries >= 14);
      assert.equal(summary.bytes, 300_000 + 22 + 10 + 2 + 1 + 7); // the hard link carries no data
      const expected = await describeTree(src);
      const actual = await describeTree(dest, summary.permissions);
      assert.deepEqual(actual, expected);
      // On disk the 0555 directory is its owner's to walk and clean up; the sender sends 0555.
      assert.equal((await lstat(path.join(dest, 'locked'))).mode & 0o7777, 0o755);
      assert.deepEqual([...summary.permissions], [['locked', 0o555]]);
      assert.equal(actual.hardlinks.length, 1);
      assert.match(actual.entries.sticky ?? '', /^dir 1777 /);
      assert.match(actual.entries['sub/suid'] ?? '', /^file 4755 /);
      if (isRoot) assert.match(actual.entries['sub/deep'] ?? '', / 1234:5678$/);
    });
  }

  test('tar --format=ustar: names split into prefix + name land at the right path', async () => {
    const ustarSrc = path.join(work, 'ustar-src');
    const deep = path.join(ustarSrc, 'p'.repeat(80), 'q'.repeat(60));
    await mkdir(deep, { recursive: true });
    await writeFile(path.join(deep, `${'r'.repeat(90)}.txt`), 'split');
    const archive = execFileSync('tar', ['--format=ustar', '-cf', '-', '-C', ustarSrc, '.']);
    // The 232-byte path really is stored as prefix + name (no PAX, no GNU long name).
    assert.equal(archive.indexOf('././@LongLink'), -1);
    assert.equal(archive.indexOf('path='), -1);
    await extractContext(chunked(archive), dest);
    assert.deepEqual(await describeTree(dest), await describeTree(ustarSrc));
  });

  test('preserveOwner: false keeps the extracting user as owner', {
    skip: !isRoot && 'needs root',
  }, async () => {
    await extractContext(chunked(tar([file('x', 'x', { uid: 1234, gid: 5678 })])), dest, {
      preserveOwner: false,
    });
    const st = await lstat(path.join(dest, 'x'));
    assert.equal(st.uid, process.getuid?.());
  });
});

describe('extractContext: never writes outside destDir', () => {
  test('symlink a -> outside, then a/passwd: rejected, nothing written outside', async () => {
    const archive = tar([DOCKERFILE, symlink('a', outside), file('a/passwd', 'pwned')]);
    await assertAppError(
      extractContext(chunked(archive), dest),
      'invalid_context',
      /"a\/passwd" would be written through "a", a symlink/,
    );
    assert.deepEqual(await listing(outside), []);
    // Relative escape the same way.
    const relative = tar([symlink('b', '../../'), dir('b/x'), file('b/x/y', 'pwned')]);
    await assertAppError(
      extractContext(chunked(relative), `${dest}-2`),
      'invalid_context',
      /through "b", a symlink/,
    );
    assert.deepEqual(await listing(outside), []);
  });

  test('a symlink already in destDir is not written through either (filesystem check, independent of the parser)', async () => {
    await mkdir(dest);
    await fsSymlink(outside, path.join(dest, 'a'));
    await assertAppError(
      extractContext(chunked(tar([file('a/passwd', 'pwned')])), dest),
      'invalid_context',
      /refusing to extract "a\/passwd": its parent "a" is a symlink/,
    );
    await assertAppError(
      extractContext(chunked(tar([file('x', 'x'), hardlink('a/h', 'x')])), dest),
      'invalid_context',
      /refusing to extract "a\/h": its parent "a" is a symlink/,
    );
    assert.deepEqual(await listing(outside), []);
  });

  test('a file entry over an existing symlink replaces the symlink instead of following it', async () => {
    const target = path.join(outside, 'target');
    // Within the archive: symlink x -> outside/target, then a regular file x (duplicates: later wins).
    await extractContext(chunked(tar([symlink('x', target), file('x', 'data')])), dest);
    assert.equal(await readFile(path.join(dest, 'x'), 'utf8'), 'data');
    assert.ok((await lstat(path.join(dest, 'x'))).isFile());
    // Pre-existing symlink to an existing outside file.
    await writeFile(target, 'original');
    await fsSymlink(target, path.join(dest, 'y'));
    await extractContext(chunked(tar([file('y', 'new')])), dest);
    assert.equal(await readFile(target, 'utf8'), 'original');
    assert.equal(await readFile(path.join(dest, 'y'), 'utf8'), 'new');
    assert.deepEqual(await listing(outside), ['target']);
  });

  test('traversal, absolute names and outside hard links are rejected before anything is written', async () => {
    const cases: [Buffer, RegExp][] = [
      [tar([file(`../${path.basename(outside)}/x`, 'pwned')]), /contains a "\.\." component/],
      [tar([file(path.join(outside, 'x'), 'pwned')]), /is an absolute path/],
      [tar([file('a/../../x', 'pwned')]), /contains a "\.\." component/],
      [
        tar([hardlink('h', '/etc/passwd')]),
        /the target of hard link "h", "\/etc\/passwd" is an absolute path/,
      ],
      [tar([hardlink('h', `../${path.basename(outside)}/x`)]), /contains a "\.\." component/],
      [tar([{ name: 'null', type: '3' }]), /character device/],
      [tar([{ name: 'fifo', type: '6' }]), /FIFO/],
    ];
    for (const [i, [archive, pattern]] of cases.entries()) {
      const target = `${dest}-${i}`;
      await assertAppError(extractContext(chunked(archive), target), 'invalid_context', pattern);
      assert.deepEqual(await listing(target), []);
    }
    assert.deepEqual(await listing(outside), []);
  });
});

describe('extractContext: behaviour', () => {
  test('duplicates: the later entry wins; hard links share the inode', async () => {
    await extractContext(
      chunked(
        tar([
          file('a', 'first'),
          file('a', 'second'),
          hardlink('h', 'a'),
          dir('d', { mode: 0o700 }),
          dir('d', { mode: 0o750 }),
        ]),
      ),
      dest,
    );
    assert.equal(await readFile(path.join(dest, 'a'), 'utf8'), 'second');
    assert.equal((await lstat(path.join(dest, 'h'))).ino, (await lstat(path.join(dest, 'a'))).ino);
    assert.equal((await lstat(path.join(dest, 'd'))).mode & 0o7777, 0o750);
  });

  test('what its owner could not read or walk is kept readable on disk, its own bits returned for the sender', async () => {
    const summary = await extractContext(
      chunked(
        tar([
          file('none', 'secret data', { mode: 0o000 }),
          file('write-only', 'w', { mode: 0o222 }),
          file('group-read', 'g', { mode: 0o044 }),
          file('setuid-exec', 'x', { mode: 0o4111 }),
          file('fine', 'f', { mode: 0o644 }),
          dir('closed', { mode: 0o000 }),
          file('closed/inside', 'i', { mode: 0o600 }),
          dir('readonly', { mode: 0o555 }),
          hardlink('none-link', 'none'),
          file('replaced', 'r', { mode: 0o000 }),
          file('replaced', 'r', { mode: 0o600 }), // the later entry's bits count
        ]),
      ),
      dest,
    );
    const onDisk = async (name: string) => (await lstat(path.join(dest, name))).mode & 0o7777;
    // Whatever user the worker runs as, it owns these and may read (and walk) them.
    assert.deepEqual(
      await Promise.all(['none', 'write-only', 'group-read', 'setuid-exec', 'fine'].map(onDisk)),
      [0o400, 0o622, 0o444, 0o4511, 0o644],
    );
    assert.deepEqual(await Promise.all(['closed', 'readonly'].map(onDisk)), [0o700, 0o755]);
    assert.equal(await readFile(path.join(dest, 'none'), 'utf8'), 'secret data');
    assert.deepEqual(Object.fromEntries(summary.permissions), {
      none: 0o000,
      'write-only': 0o222,
      'group-read': 0o044,
      'setuid-exec': 0o111,
      closed: 0o000,
      readonly: 0o555,
      'none-link': 0o000,
    });
  });

  test('extended attributes: user.* and security.capability of files and directories, by name', async () => {
    const cap = Buffer.from('0100000200200000000000000000000000000000', 'hex'); // binary, as setcap writes it
    const xattrs = (extra: Record<string, string | Buffer>) =>
      Object.fromEntries(Object.entries(extra).map(([k, v]) => [`SCHILY.xattr.${k}`, v]));
    const summary = await extractContext(
      chunked(
        tar([
          file('a', 'x', { pax: xattrs({ 'user.kiln': 'a', 'security.capability': cap }) }),
          dir('d', { pax: xattrs({ 'user.dir': 'd' }) }),
          // Dropped: namespaces of the builder host, and anything on a symlink.
          file('b', 'x', {
            pax: xattrs({
              'trusted.overlay.opaque': 'y',
              'user.overlay.opaque': 'y',
              'security.selinux': 's',
              'system.posix_acl_access': 'z',
            }),
          }),
          // GNU tar's escapes in a name.
          file('e', 'x', { pax: xattrs({ 'user.a%3Db%25c': 'e' }) }),
          symlink('l', '/etc/passwd', { pax: xattrs({ 'user.kiln': 'l' }) }),
          hardlink('h', 'a'),
          file('c', 'x', { pax: xattrs({ 'user.kiln': 'first' }) }),
          file('c', 'y'), // a later entry replaces the earlier one, attributes included
        ]),
      ),
      dest,
    );
    assert.deepEqual(
      Object.fromEntries([...summary.xattrs].map(([name, x]) => [name, Object.keys(x).sort()])),
      {
        a: ['security.capability', 'user.kiln'],
        d: ['user.dir'],
        e: ['user.a=b%c'],
        h: ['security.capability', 'user.kiln'],
      },
    );
    const capability = summary.xattrs.get('a')?.['security.capability'];
    assert.deepEqual(capability, cap);
    // Memory of its own, not a slice of a shared pool slab the build would keep alive.
    assert.equal(capability?.buffer.byteLength, cap.length);
    assert.equal(summary.xattrs.get('d')?.['user.dir']?.toString(), 'd');
  });

  test('directories implied by names are created 0755; directory mtimes survive their children', async () => {
    await extractContext(
      chunked(tar([dir('d', { mtime: 1_000_000_000 }), file('d/x', 'x'), file('implied/y', 'y')])),
      dest,
    );
    const d = await lstat(path.join(dest, 'd'));
    assert.equal(Math.floor(d.mtimeMs / 1000), 1_000_000_000);
    assert.equal((await lstat(path.join(dest, 'implied'))).mode & 0o7777, 0o755);
  });

  test('a path longer than the file system allows is a context error, not an I/O failure', async () => {
    const long = Array.from({ length: 20 }, () => 'a'.repeat(203)).join('/'); // 4079 bytes + destDir > PATH_MAX
    await assertAppError(
      extractContext(chunked(tar([file(long, 'x')])), dest),
      'invalid_context',
      /the path is too long for the file system/,
    );
  });

  test('truncated archive: rejected, the open file is closed', async () => {
    const archive = tar([file('big', Buffer.alloc(100_000, 1))], { end: false }).subarray(0, 50_000);
    await assertAppError(
      extractContext(chunked(archive), dest),
      'invalid_context',
      /truncated: entry "big" declares 100000 bytes but only 49488 follow/,
    );
  });

  test('streams file data: a 256 MiB file is extracted without holding it in memory', async () => {
    const size = 256 * 1024 * 1024;
    const chunk = Buffer.alloc(1024 * 1024, 0x61);
    let sent = 0;
    let peak = 0;
    const source = new Readable({
      read() {
        peak = Math.max(peak, process.memoryUsage().arrayBuffers);
        if (sent === 0) this.push(header({ name: 'big', size }));
        if (sent < size) {
          this.push(chunk);
          sent += chunk.length;
        } else {
          this.push(Buffer.alloc(1024));
          this.push(null);
        }
      },
    });
    const base = process.memoryUsage().arrayBuffers;
    const summary = await extractContext(source, dest);
    assert.equal(summary.bytes, size);
    assert.equal((await lstat(path.join(dest, 'big'))).size, size);
    assert.ok(peak - base < 64 * 1024 * 1024, `array buffers grew by ${peak - base} bytes`);
  });
});
