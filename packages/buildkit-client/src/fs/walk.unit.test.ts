import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import { chmodSync, statSync } from 'node:fs';
import {
  chmod,
  link,
  lstat,
  mkdir,
  mkdtemp,
  realpath,
  rm,
  symlink,
  utimes,
  writeFile,
} from 'node:fs/promises';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { parseDockerignore } from './dockerignore.js';
import { followLinks } from './followlinks.js';
import {
  goFileMode,
  MODE_CHAR_DEVICE,
  MODE_DEVICE,
  MODE_DIR,
  MODE_NAMED_PIPE,
  MODE_SETGID,
  MODE_SETUID,
  MODE_STICKY,
  MODE_SYMLINK,
  unixModeFromGo,
  type WalkEntry,
  WalkError,
  type WalkOptions,
  walk,
} from './index.js';
import { statEntry } from './stat.js';

const tempDirs: string[] = [];

/**
 * Permission tests mean nothing as root, which ignores modes: there, the test reruns itself
 * in a child process as `nobody` (util-linux setpriv) and must pass there.
 */
/**
 * `nobody` must reach this file and node_modules: a checkout inside a 0700 directory (a
 * `mktemp -d`, as clean clones use) gets the traverse bit on its parents, as
 * scripts/lib/postgres.sh does for its data directory. Nothing is made readable or listable.
 */
function allowTraverse(file: string): void {
  for (let dir = dirname(file); dir !== '/'; dir = dirname(dir)) {
    const mode = statSync(dir).mode;
    if ((mode & 0o001) === 0) chmodSync(dir, (mode & 0o7777) | 0o001);
  }
}

function unprivileged(name: string, fn: () => Promise<void>): void {
  if (process.getuid?.() !== 0) {
    it(name, fn);
    return;
  }
  it(`${name} (as nobody)`, () => {
    allowTraverse(fileURLToPath(import.meta.url));
    const pattern = `^${name.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}$`;
    const child = spawnSync(
      'setpriv',
      [
        '--reuid=65534',
        '--regid=65534',
        '--clear-groups',
        process.execPath,
        '--import',
        'tsx',
        '--test',
        `--test-name-pattern=${pattern}`,
        fileURLToPath(import.meta.url),
      ],
      // Without NODE_TEST_CONTEXT the child reports as a standalone run (TAP on stdout).
      { encoding: 'utf8', env: { ...process.env, HOME: tmpdir(), NODE_TEST_CONTEXT: undefined } },
    );
    assert.equal(child.status, 0, `${child.stdout}\n${child.stderr}`);
    assert.match(child.stdout, /# pass 1\n/);
  });
}

after(async () => {
  await Promise.all(tempDirs.map((d) => rm(d, { recursive: true, force: true })));
});

/**
 * Builds a tree from fsutil-test-like lines: "path dir", "path file [data]",
 * "path symlink target", "path hardlink target". Files are 0644 and dirs 0700, like fsutil's.
 */
async function tree(...lines: string[]): Promise<string> {
  const root = await realpath(await mkdtemp(join(tmpdir(), 'walk-test-')));
  tempDirs.push(root);
  for (const line of lines) {
    const [path = '', kind, ...rest] = line.split(' ');
    const abs = join(root, path);
    if (kind === 'dir') {
      await mkdir(abs, { mode: 0o700 });
    } else if (kind === 'symlink') {
      await symlink(rest.join(' '), abs);
    } else if (kind === 'hardlink') {
      await link(join(root, rest.join(' ')), abs);
    } else {
      await writeFile(abs, rest.join(' '));
      await chmod(abs, 0o644);
    }
  }
  return root;
}

async function collect(root: string, opts?: WalkOptions): Promise<WalkEntry[]> {
  const out: WalkEntry[] = [];
  for await (const e of walk(root, opts)) out.push(e);
  return out;
}

/** fsutil's bufWalk format: "file foo", "dir bar", "symlink:target link", "file b >a" for hardlinks. */
async function listing(root: string, opts?: WalkOptions): Promise<string[]> {
  return (await collect(root, opts)).map((e) => {
    if (e.mode & MODE_SYMLINK) return `symlink:${e.linkname} ${e.path}`;
    const kind = e.mode & MODE_DIR ? 'dir' : 'file';
    return e.linkname ? `${kind} ${e.path} >${e.linkname}` : `${kind} ${e.path}`;
  });
}

const lines = (text: string): string[] =>
  text
    .split('\n')
    .map((l) => l.trim())
    .filter((l) => l !== '');

describe('walk order and entry fields', () => {
  let root: string;
  before(async () => {
    root = await tree(
      'sub.dir dir',
      'sub.dir/z file z',
      'sub-dir dir',
      'sub-dir/y file yy',
      'sub dir',
      'sub/x file xxx',
      'Sub file',
      'é file',
      '😀 file',
      '\uFFFD file',
      'exec file #!/bin/sh',
      'secret file s3cr3t',
      'a.txt file hello',
      'z-hardlink hardlink a.txt',
      'rel symlink sub/x',
      'abs symlink /etc/hostname',
    );
    await chmod(join(root, 'exec'), 0o755);
    await chmod(join(root, 'secret'), 0o640);
    await chmod(join(root, 'sub'), 0o755);
    await utimes(join(root, 'a.txt'), new Date('2020-01-02T03:04:05Z'), new Date('2020-01-02T03:04:05Z'));
  });

  it('is depth-first with siblings in byte order of their names', async () => {
    assert.deepEqual(
      (await collect(root)).map((e) => e.path),
      [
        'Sub',
        'a.txt',
        'abs',
        'exec',
        'rel',
        'secret',
        'sub',
        'sub/x',
        'sub-dir',
        'sub-dir/y',
        'sub.dir',
        'sub.dir/z',
        'z-hardlink',
        'é',
        '\uFFFD',
        '😀',
      ],
    );
  });

  it('reports fsutil Stat fields', async () => {
    const byPath = new Map((await collect(root)).map((e) => [e.path, e]));
    const uid = process.getuid?.() ?? 0;
    const gid = process.getgid?.() ?? 0;
    const aTxt = await lstat(join(root, 'a.txt'), { bigint: true });

    assert.deepEqual(byPath.get('a.txt'), {
      path: 'a.txt',
      absPath: join(root, 'a.txt'),
      mode: 0o644,
      uid,
      gid,
      size: 5,
      modTime: aTxt.mtimeNs,
      linkname: '',
      devmajor: 0,
      devminor: 0,
      changeTime: aTxt.ctimeNs,
      inode: aTxt.ino,
    });
    assert.equal(aTxt.mtimeNs, 1577934245000000000n);
    assert.equal(byPath.get('exec')?.mode, 0o755);
    assert.equal(byPath.get('secret')?.mode, 0o640);

    const sub = byPath.get('sub');
    assert.equal(sub?.mode, (MODE_DIR | 0o755) >>> 0);
    assert.equal(sub?.mode, 2147484141);
    assert.equal(sub?.size, 0);
    assert.equal(byPath.get('sub-dir')?.mode, (MODE_DIR | 0o700) >>> 0);

    const rel = byPath.get('rel');
    assert.equal(rel?.mode, (MODE_SYMLINK | 0o777) >>> 0);
    assert.equal(rel?.linkname, 'sub/x');
    assert.equal(rel?.size, 'sub/x'.length);
    assert.equal(byPath.get('abs')?.linkname, '/etc/hostname');
    assert.equal(byPath.get('abs')?.size, '/etc/hostname'.length);
  });

  it('links a later hardlink to the first path walked, keeping its size', async () => {
    const byPath = new Map((await collect(root)).map((e) => [e.path, e]));
    assert.equal(byPath.get('a.txt')?.linkname, '');
    assert.equal(byPath.get('z-hardlink')?.linkname, 'a.txt');
    assert.equal(byPath.get('z-hardlink')?.size, 5);
    assert.equal(byPath.get('z-hardlink')?.mode, 0o644);
  });

  it('follows a symlinked root and reports real paths', async () => {
    const linkDir = await tree();
    await symlink(root, join(linkDir, 'ctx'));
    const entries = await collect(join(linkDir, 'ctx'));
    assert.equal(entries[0]?.absPath, join(root, 'Sub'));
  });
});

describe('special files', () => {
  it('clears the socket bit like fsutil and keeps fifo bits', async () => {
    const root = await tree('f file');
    const server = createServer();
    await new Promise<void>((resolve) => server.listen(join(root, 'sock'), resolve));
    try {
      execFileSync('mkfifo', ['-m', '0600', join(root, 'pipe')]);
      const byPath = new Map((await collect(root)).map((e) => [e.path, e]));
      const sock = await lstat(join(root, 'sock'));
      assert.equal(byPath.get('sock')?.mode, sock.mode & 0o777);
      assert.equal(byPath.get('pipe')?.mode, (MODE_NAMED_PIPE | 0o600) >>> 0);
    } finally {
      await new Promise((resolve) => server.close(resolve));
    }
  });

  it('splits a device number the way fsutil does', () => {
    const entry = statEntry('null', '/dev/null', new Map());
    assert.equal(entry.mode, (MODE_DEVICE | MODE_CHAR_DEVICE | 0o666) >>> 0);
    assert.deepEqual([entry.devmajor, entry.devminor], [1, 3]);
  });

  it('converts modes both ways', async () => {
    assert.equal(goFileMode(await lstat('/dev/null')), (MODE_DEVICE | MODE_CHAR_DEVICE | 0o666) >>> 0);
    assert.deepEqual(unixModeFromGo((MODE_DIR | MODE_STICKY | 0o777) >>> 0), { type: 'dir', perm: 0o1777 });
    assert.deepEqual(unixModeFromGo(MODE_SETUID | MODE_SETGID | 0o755), { type: 'file', perm: 0o6755 });
    assert.deepEqual(unixModeFromGo((MODE_SYMLINK | 0o777) >>> 0), { type: 'symlink', perm: 0o777 });
    assert.deepEqual(unixModeFromGo(MODE_DEVICE | 0o600), { type: 'blockdev', perm: 0o600 });
    assert.deepEqual(unixModeFromGo(MODE_DEVICE | MODE_CHAR_DEVICE | 0o666), {
      type: 'chardev',
      perm: 0o666,
    });
    assert.deepEqual(unixModeFromGo(MODE_NAMED_PIPE | 0o644), { type: 'fifo', perm: 0o644 });
  });
});

describe('a .dockerignore as exclude patterns', () => {
  it('skips excluded trees, descends where an exception may apply and anchors "/" to the root', async () => {
    const root = await tree(
      '.dockerignore file',
      'Dockerfile file',
      'build dir',
      'build/out.bin file',
      'docs dir',
      'docs/readme.md file',
      'logs dir',
      'logs/a.log file',
      'logs/keep.log file',
      'nested dir',
      'nested/build dir',
      'nested/build/x file',
      'node_modules dir',
      'node_modules/a dir',
      'node_modules/a/index.js file',
      'src dir',
      'src/app.ts file',
      'src/app.test.ts file',
      'src/vendor dir',
      'src/vendor/lib.ts file',
    );
    const excludes = parseDockerignore(
      '# comment\n/node_modules\n**/*.test.ts\nlogs\n!logs/keep.log\n/build\ndocs/**\n',
    );
    assert.deepEqual(
      await listing(root, { excludePatterns: excludes }),
      lines(`
        file .dockerignore
        file Dockerfile
        dir docs
        dir logs
        file logs/keep.log
        dir nested
        dir nested/build
        file nested/build/x
        dir src
        file src/app.ts
        dir src/vendor
        file src/vendor/lib.ts
      `),
    );
  });

  it('descends every excluded directory when an exception has wildcards, emitting only those with matches', async () => {
    const root = await tree(
      'a dir',
      'a/b dir',
      'a/b/main.go file',
      'a/c dir',
      'a/c/readme file',
      'x.go file',
      'y.txt file',
    );
    assert.deepEqual(
      await listing(root, { excludePatterns: ['**', '!**/*.go'] }),
      lines(`
        dir a
        dir a/b
        file a/b/main.go
        file x.go
      `),
    );
  });
});

// Ported from fsutil filter_test.go.
describe('fsutil walker tests', () => {
  it('TestWalkerSimple', async () => {
    const root = await tree('foo file', 'foo2 file');
    assert.deepEqual(await listing(root), ['file foo', 'file foo2']);
  });

  it('TestInvalidExcludePatterns', async () => {
    const root = await tree('foo file data1');
    await assert.rejects(
      collect(root, { excludePatterns: ['!'] }),
      (err: unknown) => err instanceof WalkError && err.code === 'INVALID_EXCLUDE_PATTERNS',
    );
  });

  it('TestWalkerInclude', async () => {
    const root = await tree('bar dir', 'bar/foo file', 'foo2 file');
    const cases: Array<[string, string[]]> = [
      ['bar', ['dir bar', 'file bar/foo']],
      ['bar/foo', ['dir bar', 'file bar/foo']],
      ['b*', ['dir bar', 'file bar/foo']],
      ['bar/f*', ['dir bar', 'file bar/foo']],
      ['bar/g*', []],
      ['f*', ['file foo2']],
      ['b*/f*', ['dir bar', 'file bar/foo']],
      ['b*/foo', ['dir bar', 'file bar/foo']],
      ['b*/', ['dir bar', 'file bar/foo']],
    ];
    for (const [pattern, want] of cases) {
      assert.deepEqual(await listing(root, { includePatterns: [pattern] }), want, pattern);
    }
  });

  it('TestWalkerExclude', async () => {
    const root = await tree('bar file', 'foo dir', 'foo2 file', 'foo/bar2 file');
    assert.deepEqual(await listing(root, { excludePatterns: ['foo*', '!foo/bar2'] }), [
      'file bar',
      'dir foo',
      'file foo/bar2',
    ]);
  });

  it('TestWalkerFollowLinks', async () => {
    const root = await tree(
      'bar file',
      'foo dir',
      'foo/l1 symlink /baz/one',
      'foo/l2 symlink /baz/two',
      'baz dir',
      'baz/one file',
      'baz/two symlink ../bax',
      'bax file',
      'bay file',
    );
    assert.deepEqual(
      await listing(root, { followPaths: ['foo/l*', 'bar'] }),
      lines(`
        file bar
        file bax
        dir baz
        file baz/one
        symlink:../bax baz/two
        dir foo
        symlink:/baz/one foo/l1
        symlink:/baz/two foo/l2
      `),
    );
  });

  it('TestWalkerFollowLinksToRoot', async () => {
    const root = await tree('foo symlink .', 'bar file', 'bax file', 'bay dir', 'bay/baz file');
    assert.deepEqual(await listing(root, { followPaths: ['foo'] }), [
      'file bar',
      'file bax',
      'dir bay',
      'file bay/baz',
      'symlink:. foo',
    ]);
  });

  unprivileged('TestWalkerPermissionDenied', async () => {
    const root = await tree('foo dir', 'foo/bar dir');
    await chmod(join(root, 'foo', 'bar'), 0);
    try {
      await assert.rejects(collect(root), { code: 'EACCES' });
      assert.deepEqual(await listing(root, { excludePatterns: ['**/bar'] }), ['dir foo']);
      assert.deepEqual(await listing(root, { excludePatterns: ['**/bar', '!foo/bar/baz'] }), ['dir foo']);
      await assert.rejects(collect(root, { excludePatterns: ['**/bar', '!foo/bar'] }), { code: 'EACCES' });
      assert.deepEqual(await listing(root, { includePatterns: ['foo', '!**/bar'] }), ['dir foo']);
    } finally {
      await chmod(join(root, 'foo', 'bar'), 0o700);
    }
  });

  unprivileged('reports an lstat failure only for an entry the walk keeps', async () => {
    // Listable but not searchable: names come back, lstat fails.
    const root = await tree('r dir', 'r/x file', 'r/y file');
    await chmod(join(root, 'r'), 0o400);
    try {
      assert.deepEqual(await listing(root, { excludePatterns: ['r/*'] }), ['dir r']);
      await assert.rejects(collect(root, { excludePatterns: ['r/x'] }), { code: 'EACCES' });
    } finally {
      await chmod(join(root, 'r'), 0o700);
    }
  });

  it('TestWalkerDoublestarInclude', async () => {
    const root = await tree(
      'a dir',
      'a/b dir',
      'a/b/baz dir',
      'a/b/bar dir',
      'a/b/bar/foo file',
      'a/b/bar/fop file',
      'bar dir',
      'bar/foo file',
      'baz dir',
      'foo2 file',
      'foo dir',
      'foo/bar dir',
      'foo/bar/bee file',
    );
    const cases: Array<[string, string]> = [
      [
        '**',
        `dir a
         dir a/b
         dir a/b/bar
         file a/b/bar/foo
         file a/b/bar/fop
         dir a/b/baz
         dir bar
         file bar/foo
         dir baz
         dir foo
         dir foo/bar
         file foo/bar/bee
         file foo2`,
      ],
      [
        '**/bar',
        `dir a
         dir a/b
         dir a/b/bar
         file a/b/bar/foo
         file a/b/bar/fop
         dir bar
         file bar/foo
         dir foo
         dir foo/bar
         file foo/bar/bee`,
      ],
      [
        '**/bar/foo',
        `dir a
         dir a/b
         dir a/b/bar
         file a/b/bar/foo
         dir bar
         file bar/foo`,
      ],
      [
        '**/b*',
        `dir a
         dir a/b
         dir a/b/bar
         file a/b/bar/foo
         file a/b/bar/fop
         dir a/b/baz
         dir bar
         file bar/foo
         dir baz
         dir foo
         dir foo/bar
         file foo/bar/bee`,
      ],
      [
        '**/bar/f*',
        `dir a
         dir a/b
         dir a/b/bar
         file a/b/bar/foo
         file a/b/bar/fop
         dir bar
         file bar/foo`,
      ],
      ['**/bar/g*', ''],
      [
        '**/f*',
        `dir a
         dir a/b
         dir a/b/bar
         file a/b/bar/foo
         file a/b/bar/fop
         dir bar
         file bar/foo
         dir foo
         dir foo/bar
         file foo/bar/bee
         file foo2`,
      ],
      [
        '**/b*/f*',
        `dir a
         dir a/b
         dir a/b/bar
         file a/b/bar/foo
         file a/b/bar/fop
         dir bar
         file bar/foo`,
      ],
      [
        '**/b*/foo',
        `dir a
         dir a/b
         dir a/b/bar
         file a/b/bar/foo
         dir bar
         file bar/foo`,
      ],
      [
        '**/foo/**',
        `dir foo
         dir foo/bar
         file foo/bar/bee`,
      ],
      [
        '**/baz',
        `dir a
         dir a/b
         dir a/b/baz
         dir baz`,
      ],
    ];
    for (const [pattern, want] of cases) {
      assert.deepEqual(await listing(root, { includePatterns: [pattern] }), lines(want), pattern);
    }
  });

  it('TestFSWalkNested (single filter)', async () => {
    const root = await tree('foo dir', 'foo/bar file');
    assert.deepEqual(await listing(root, { excludePatterns: ['foo', '!foo/bar'] }), [
      'dir foo',
      'file foo/bar',
    ]);
  });

  it('fails the walk on a pattern whose regexp does not compile', async () => {
    const root = await tree('x file');
    await assert.rejects(
      collect(root, { excludePatterns: ['[Local-Only]'] }),
      (err: unknown) => err instanceof WalkError && err.code === 'EXCLUDE_MATCH_FAILED',
    );
  });

  it('fails on a name that is not valid UTF-8 instead of dropping the rest of its directory, unless excluded', async () => {
    const root = await tree('app.py file', 'main.py file', 'sub dir', 'sub/x file');
    await writeFile(
      Buffer.concat([Buffer.from(`${root}/caf`), Buffer.from([0xe9]), Buffer.from('.txt')]),
      'x',
    );
    await mkdir(Buffer.concat([Buffer.from(`${root}/sub/d`), Buffer.from([0xff])]));
    await assert.rejects(
      collect(root),
      (err: unknown) =>
        err instanceof WalkError &&
        err.code === 'UNDECODABLE_NAME' &&
        err.message.startsWith('caf\uFFFD.txt:'),
    );
    await assert.rejects(collect(root, { excludePatterns: ['caf*'] }), /^WalkError: sub\/d\uFFFD:/);
    const kept = await collect(root, { excludePatterns: ['caf*', 'sub/d*'] });
    assert.deepEqual(
      kept.map((e) => e.path),
      ['app.py', 'main.py', 'sub', 'sub/x'],
    );
    // Excluded, though walked for a wildcard `!` exception that might apply below it.
    const excepted = await collect(root, { excludePatterns: ['caf*', 'sub/d*', '!**/*.keep'] });
    assert.deepEqual(
      excepted.map((e) => e.path),
      ['app.py', 'main.py', 'sub', 'sub/x'],
    );
  });

  it('rejects a root that is not a directory', async () => {
    const root = await tree('f file');
    await assert.rejects(collect(join(root, 'f')), { code: 'ROOT_NOT_DIRECTORY' });
  });
});

describe('followpaths edge cases', () => {
  it('an empty followpaths list still deduplicates the include patterns', async () => {
    const root = await tree('a dir', 'a/b file', 'c file');
    assert.deepEqual(await listing(root, { includePatterns: ['/c', 'a', 'a/b'] }), ['dir a', 'file a/b']);
    assert.deepEqual(await listing(root, { includePatterns: ['/c', 'a', 'a/b'], followPaths: [] }), [
      'dir a',
      'file a/b',
    ]);
    // A "." among the include patterns then means "no include filter at all".
    assert.deepEqual(await listing(root, { includePatterns: ['c', '.'] }), ['file c']);
    assert.deepEqual(await listing(root, { includePatterns: ['c', '.'], followPaths: [] }), [
      'dir a',
      'file a/b',
      'file c',
    ]);
  });
});

// Ported from fsutil followlinks_test.go.
describe('followLinks', () => {
  it('TestFollowLinks', async () => {
    const root = await tree(
      'dir dir',
      'dir/foo file contents',
      'dir/l1 symlink foo',
      'l2 symlink dir/l1',
      'bar file',
      'baz file',
    );
    assert.deepEqual(await followLinks(root, ['l2', 'bar']), ['bar', 'dir/foo', 'dir/l1', 'l2']);
  });

  it('TestFollowLinksLoop', async () => {
    const root = await tree('l1 symlink l1', 'l3 symlink l2', 'l2 symlink l3');
    assert.deepEqual(await followLinks(root, ['l1', 'l3']), ['l1', 'l2', 'l3']);
  });

  it('TestFollowLinksAbsolute', async () => {
    for (const up of ['../', '../../../']) {
      const root = await tree(
        'dir dir',
        'dir/l1 symlink /foo/bar/baz',
        'foo dir',
        `foo/bar symlink ${up}`,
        'baz file',
      );
      assert.deepEqual(await followLinks(root, ['dir/l1']), ['baz', 'dir/l1', 'foo/bar']);
    }
  });

  it('TestFollowLinksNotExists', async () => {
    const root = await tree();
    assert.deepEqual(await followLinks(root, ['foo/bar/baz', 'bar/baz']), ['bar/baz', 'foo/bar/baz']);
    assert.equal(await followLinks(root, ['.']), undefined);
    assert.deepEqual(await followLinks(root, ['f*/foo/t*']), ['f*/foo/t*']);
  });

  it('TestFollowLinksNormalized', async () => {
    const empty = await tree();
    assert.deepEqual(await followLinks(empty, ['foo/bar/baz', 'foo/bar']), ['foo/bar']);
    const root = await tree('dir dir', 'dir/l1 symlink /foo', 'dir/l2 symlink /', 'foo dir', 'foo/bar file');
    assert.deepEqual(await followLinks(root, ['dir/l1', 'foo/bar']), ['dir/l1', 'foo']);
    assert.equal(await followLinks(root, ['dir/l2', 'foo', 'foo/bar']), undefined);
  });

  it('TestFollowLinksWildcard', async () => {
    const root = await tree(
      'dir dir',
      'foo dir',
      'dir/l1 symlink /foo/bar1',
      'dir/l2 symlink /foo/bar2',
      'dir/anotherlink symlink /foo/bar3',
      'foo/bar2 symlink ../baz',
      'foo/bar1 file',
      'foo/bar3 file',
      'baz file',
    );
    assert.deepEqual(await followLinks(root, ['dir/l*']), ['baz', 'dir/l*', 'foo/bar1', 'foo/bar2']);
    assert.deepEqual(await followLinks(root, ['dir']), ['dir']);
    assert.deepEqual(await followLinks(root, ['dir', 'dir/*link']), ['dir', 'foo/bar3']);
  });
});
