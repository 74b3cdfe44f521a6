// Which files `kiln build` sends: exactly what fsutil's walk (BuildKit's FileSync) selects with
// the same ignore patterns, plus docker's always-sent Dockerfile and ignore files; and the tar
// that carries them, read back by /bin/tar and by the server's own validator and extractor.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import {
  lstat,
  mkdir,
  mkdtemp,
  readdir,
  readFile,
  readlink,
  rename,
  rm,
  symlink,
  writeFile,
} from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { PassThrough } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { after, before, describe, test } from 'node:test';
import { parseDockerignore, walk } from '@kiln/buildkit-client/context';
import { createContextValidator, extractContext } from '@kiln/core';
import { makeContext } from '../../../packages/buildkit-client/test-support/context.js';
import { readTarEntries } from '../../../packages/buildkit-client/test-support/tar-entries.js';
import { contextTarStream, planContext, type TarStreamOptions } from './context-tar.js';

let work = '';
before(async () => {
  work = await mkdtemp(path.join(tmpdir(), 'kiln-cli-ctx-'));
});
after(async () => {
  await rm(work, { recursive: true, force: true });
});

const pathsOf = (plan: Awaited<ReturnType<typeof planContext>>) =>
  plan.items.map((i) => (i.kind === 'walk' ? i.entry.path : i.path));

async function walkPaths(root: string, excludePatterns: string[]): Promise<string[]> {
  const out: string[] = [];
  for await (const e of walk(root, excludePatterns.length ? { excludePatterns } : {})) out.push(e.path);
  return out;
}

async function tarOf(
  plan: Awaited<ReturnType<typeof planContext>>,
  opts?: TarStreamOptions,
): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const c of contextTarStream(plan, opts)) chunks.push(c as Buffer);
  return Buffer.concat(chunks);
}

const TREE = {
  Dockerfile: 'FROM scratch\nCOPY . /\n',
  'app.log': 'log',
  'src/main.c': 'int main;',
  'src/debug.log': 'log',
  'src/node_modules/x/index.js': 'x',
  'node_modules/y/index.js': 'y',
  'build/out.o': 'o',
  'build/keep.txt': 'keep',
  'docs/a.md': 'a',
  'docs/b.txt': 'b',
  'docs/sub/c.md': 'c',
  secret: 's',
  'sub dir/ü.txt': 'unicode',
  empty: { dir: true },
  link: { symlink: 'src/main.c' },
  hard: { hardlinkTo: 'src/main.c' },
} as const;

describe('context selection', () => {
  test('the files are the ones fsutil walks with the .dockerignore patterns, in its order', async () => {
    const ignore = [
      '# a comment',
      '*.log',
      '**/node_modules',
      'build',
      '!build/keep.txt',
      'docs/*.md',
      '/secret',
      '',
    ].join('\n');
    const ctx = await makeContext({ ...TREE, '.dockerignore': ignore });
    try {
      const plan = await planContext({ contextDir: ctx.dir, cwd: '/' });
      const patterns = parseDockerignore(ignore);
      assert.deepEqual(plan.excludePatterns, patterns);
      assert.equal(plan.ignoreFile, '.dockerignore');
      assert.equal(plan.dockerfile, 'Dockerfile');
      const expected = await walkPaths(ctx.dir, patterns);
      assert.deepEqual(pathsOf(plan), expected);
      // What that means, spelled out.
      for (const gone of ['app.log', 'src/node_modules', 'node_modules', 'build/out.o', 'secret']) {
        assert.ok(!expected.includes(gone), gone);
      }
      // `*.log` matches at the top only (moby/patternmatcher), `docs/*.md` one level only.
      for (const kept of [
        'src/debug.log',
        'build',
        'build/keep.txt',
        'docs/b.txt',
        'docs/sub/c.md',
        'link',
        'hard',
        'empty',
      ]) {
        assert.ok(expected.includes(kept), kept);
      }
      assert.equal(plan.files, 8); // regular files; `hard` is a hard link to src/main.c
    } finally {
      await ctx.cleanup();
    }
  });

  test('without a .dockerignore everything is sent', async () => {
    const ctx = await makeContext(TREE);
    try {
      const plan = await planContext({ contextDir: ctx.dir, cwd: '/' });
      assert.equal(plan.ignoreFile, undefined);
      assert.deepEqual(pathsOf(plan), await walkPaths(ctx.dir, []));
    } finally {
      await ctx.cleanup();
    }
  });

  test('the Dockerfile and .dockerignore are sent even when excluded (docker), the patterns stay as written', async () => {
    const ignore = '*\n!src\n';
    const ctx = await makeContext({
      ...TREE,
      '.dockerignore': ignore,
      'docker/app.Dockerfile': 'FROM scratch\n',
    });
    try {
      const plan = await planContext({
        contextDir: ctx.dir,
        cwd: ctx.dir,
        dockerfile: 'docker/app.Dockerfile',
      });
      assert.equal(plan.dockerfile, 'docker/app.Dockerfile');
      assert.deepEqual(plan.excludePatterns, ['*', '!src']);
      assert.deepEqual(
        pathsOf(plan),
        await walkPaths(ctx.dir, ['*', '!src', '!.dockerignore', '!docker/app.Dockerfile']),
      );
      assert.deepEqual(
        pathsOf(plan).filter((p) => !p.startsWith('src/')),
        ['.dockerignore', 'docker', 'docker/app.Dockerfile', 'src'],
      );
    } finally {
      await ctx.cleanup();
    }
  });

  test('<Dockerfile>.dockerignore beside the Dockerfile takes the place of .dockerignore (BuildKit)', async () => {
    const ctx = await makeContext({
      ...TREE,
      '.dockerignore': 'src\n',
      'sub/app.Dockerfile': 'FROM scratch\nCOPY . /\n',
      'sub/app.Dockerfile.dockerignore': 'docs\nsub/app.Dockerfile*\n',
    });
    try {
      const plan = await planContext({ contextDir: ctx.dir, cwd: ctx.dir, dockerfile: 'sub/app.Dockerfile' });
      assert.equal(plan.ignoreFile, 'sub/app.Dockerfile.dockerignore');
      assert.deepEqual(plan.excludePatterns, ['docs', 'sub/app.Dockerfile*']);
      const paths = pathsOf(plan);
      assert.deepEqual(
        paths,
        await walkPaths(ctx.dir, [
          'docs',
          'sub/app.Dockerfile*',
          '!sub/app.Dockerfile.dockerignore',
          '!sub/app.Dockerfile',
        ]),
      );
      assert.ok(paths.includes('src/main.c') && !paths.includes('docs/b.txt'));
      assert.ok(paths.includes('sub/app.Dockerfile') && paths.includes('sub/app.Dockerfile.dockerignore'));
    } finally {
      await ctx.cleanup();
    }
  });

  test('-f relative to the working directory; lower-case dockerfile found like docker finds it', async () => {
    const ctx = await makeContext({ dockerfile: 'FROM scratch\n', a: 'a' });
    try {
      assert.equal((await planContext({ contextDir: ctx.dir, cwd: '/' })).dockerfile, 'dockerfile');
      const viaCwd = await planContext({ contextDir: '.', cwd: ctx.dir, dockerfile: 'dockerfile' });
      assert.equal(viaCwd.dockerfile, 'dockerfile');
      await assert.rejects(
        planContext({ contextDir: ctx.dir, cwd: '/', dockerfile: 'nope/Dockerfile' }),
        /cannot find the Dockerfile: "\/nope\/Dockerfile" does not exist/,
      );
      await assert.rejects(planContext({ contextDir: path.join(ctx.dir, 'missing'), cwd: '/' }), /not found/);
    } finally {
      await ctx.cleanup();
    }
  });

  test('a Dockerfile outside the context (or on stdin) goes in under a random name the .dockerignore hides', async () => {
    const ctx = await makeContext({
      'ctx/a': 'a',
      'ctx/.dockerignore': 'b\n',
      'ctx/b': 'b',
      'outside.Dockerfile': 'FROM scratch\n',
    });
    try {
      const plan = await planContext({ contextDir: 'ctx', cwd: ctx.dir, dockerfile: 'outside.Dockerfile' });
      assert.match(plan.dockerfile, /^\.dockerfile\.[0-9a-f]{20}$/);
      assert.deepEqual(plan.excludePatterns, ['b', plan.dockerfile]);
      const inline = new Map(
        plan.items.flatMap((i) => (i.kind === 'inline' ? [[i.path, i.data.toString()] as const] : [])),
      );
      assert.equal(inline.get(plan.dockerfile), 'FROM scratch\n');
      assert.equal(inline.get('.dockerignore'), `b\n\n${plan.dockerfile}\n`);
      assert.deepEqual(pathsOf(plan).sort(), ['.dockerignore', 'a', plan.dockerfile].sort());

      const stdin = await planContext({
        contextDir: path.join(ctx.dir, 'ctx'),
        cwd: '/',
        dockerfile: '-',
        readStdin: async () => Buffer.from('FROM scratch\nCOPY a /a\n'),
      });
      assert.match(stdin.dockerfile, /^\.dockerfile\./);
      const listed = execFileSync('/bin/tar', ['-tf', '-'], { input: await tarOf(stdin), encoding: 'utf8' });
      assert.deepEqual(listed.trim().split('\n').sort(), ['.dockerignore', 'a', stdin.dockerfile].sort());
    } finally {
      await ctx.cleanup();
    }
  });

  test('a .dockerignore that is a symlink out of the context is neither read nor sent; one to a file within it applies', async () => {
    const ctx = await makeContext({
      'secret.txt': 'KILN_TOKEN=kiln_secret\n',
      'ctx/a': 'a',
      'ctx/.dockerignore': { symlink: '../secret.txt' },
      'in/a': 'a',
      'in/b': 'b',
      'in/ci/ignore': 'b\n',
      'in/.dockerignore': { symlink: 'ci/ignore' },
      'outside.Dockerfile': 'FROM scratch\n',
    });
    try {
      const plan = await planContext({ contextDir: 'ctx', cwd: ctx.dir, dockerfile: 'outside.Dockerfile' });
      const tar = await tarOf(plan);
      assert.equal(tar.includes('kiln_secret'), false, 'the link target went into the upload');
      assert.equal(plan.excludePatterns.includes('KILN_TOKEN=kiln_secret'), false);
      assert.deepEqual(plan.warnings, [
        '.dockerignore is not a readable file inside the context (a symlink out of it?): its patterns do not apply',
      ]);

      const inside = await planContext({ contextDir: 'in', cwd: ctx.dir, dockerfile: 'outside.Dockerfile' });
      assert.deepEqual(inside.excludePatterns, ['b', inside.dockerfile]);
      assert.deepEqual(inside.warnings, []);
      assert.equal(pathsOf(inside).includes('b'), false);
    } finally {
      await ctx.cleanup();
    }
  });

  test("a Dockerfile outside the context with its own .dockerignore: those patterns decide what is sent (BuildKit's rule)", async () => {
    const ctx = await makeContext({
      'app/.env': 'TOKEN=secret',
      'app/.dockerignore': 'main.py\n',
      'app/main.py': 'print()',
      'docker/app.Dockerfile': 'FROM scratch\nCOPY . /app\n',
      'docker/app.Dockerfile.dockerignore': '.env\n',
    });
    try {
      const plan = await planContext({
        contextDir: 'app',
        cwd: ctx.dir,
        dockerfile: 'docker/app.Dockerfile',
      });
      const ignoreName = `${plan.dockerfile}.dockerignore`;
      assert.equal(plan.ignoreFile, ignoreName);
      assert.deepEqual(plan.excludePatterns, ['.env', plan.dockerfile, ignoreName]);
      // .env stays on this machine; main.py goes (the context's .dockerignore does not apply),
      // and that file itself goes unchanged, as docker sends it.
      assert.deepEqual(
        pathsOf(plan).sort(),
        ['.dockerignore', 'main.py', plan.dockerfile, ignoreName].sort(),
      );
      const inline = new Map(
        plan.items.flatMap((i) => (i.kind === 'inline' ? [[i.path, i.data.toString()] as const] : [])),
      );
      assert.equal(inline.get(ignoreName), `.env\n\n${plan.dockerfile}\n${ignoreName}\n`);
      assert.equal(inline.has('.dockerignore'), false);
    } finally {
      await ctx.cleanup();
    }
  });

  test('a file swapped for a symlink after the walk is not followed out of the context', async () => {
    const ctx = await makeContext({
      'ctx/Dockerfile': 'FROM scratch\n',
      'ctx/a': 'a',
      'outside.txt': 'host secret',
    });
    try {
      const plan = await planContext({ contextDir: 'ctx', cwd: ctx.dir });
      await rm(path.join(ctx.dir, 'ctx/a'));
      await symlink(path.join(ctx.dir, 'outside.txt'), path.join(ctx.dir, 'ctx/a'));
      const warnings: string[] = [];
      const tar = await tarOf(plan, { onWarning: (w) => warnings.push(w) });
      assert.equal(tar.includes(Buffer.from('host secret')), false);
      assert.match(warnings.join('\n'), /^a: cannot be opened \(ELOOP\)/m);
    } finally {
      await ctx.cleanup();
    }
  });

  test('a parent directory swapped for a symlink after the walk fails the upload, nothing read from outside', async () => {
    const ctx = await makeContext({
      'ctx/Dockerfile': 'FROM scratch\n',
      'ctx/conf/secret': 'in the context',
      'outside/secret': 'host secret',
    });
    try {
      const plan = await planContext({ contextDir: 'ctx', cwd: ctx.dir });
      await rename(path.join(ctx.dir, 'ctx/conf'), path.join(ctx.dir, 'ctx/conf.old'));
      await symlink(path.join(ctx.dir, 'outside'), path.join(ctx.dir, 'ctx/conf'));
      await assert.rejects(tarOf(plan), /conf\/secret in the context was replaced while it was being sent/);
    } finally {
      await ctx.cleanup();
    }
  });

  test('FIFOs cannot travel in a context: left out and reported', async () => {
    const ctx = await makeContext({ Dockerfile: 'FROM scratch\n', a: 'a' });
    try {
      execFileSync('mkfifo', [path.join(ctx.dir, 'pipe')]);
      const plan = await planContext({ contextDir: ctx.dir, cwd: '/' });
      assert.deepEqual(plan.skipped, ['pipe']);
      assert.deepEqual(pathsOf(plan), ['Dockerfile', 'a']);
    } finally {
      await ctx.cleanup();
    }
  });

  test('a socket or a file that cannot be opened goes as an empty file with its mode, reported, as docker sends it', async () => {
    const ctx = await makeContext({
      Dockerfile: 'FROM scratch\n',
      'socket.sock': { special: 'socket', mode: 0o600 },
      later: 'removed after the walk',
    });
    try {
      const plan = await planContext({ contextDir: ctx.dir, cwd: '/' });
      assert.deepEqual(plan.skipped, []);
      await rm(path.join(ctx.dir, 'later'));
      const warnings: string[] = [];
      const entries = await readTarEntries(await tarOf(plan, { onWarning: (w) => warnings.push(w) }));
      const empty = createHash('sha256').digest('hex');
      for (const name of ['socket.sock', 'later']) {
        const e = entries.find((x) => x.name === name);
        assert.deepEqual([e?.type, e?.size, e?.sha256], ['file', 0, empty], name);
      }
      assert.equal(entries.find((x) => x.name === 'socket.sock')?.mode, 0o600);
      assert.deepEqual(warnings, [
        'later: cannot be opened (ENOENT), sent as an empty file',
        'socket.sock: cannot be opened (ENXIO), sent as an empty file',
      ]);
    } finally {
      await ctx.cleanup();
    }
  });

  test('symlinks out of the context travel as links: nothing outside it is read or sent', async () => {
    const outside = await mkdtemp(path.join(tmpdir(), 'kiln-cli-outside-'));
    const secret = `outside-${createHash('sha256').update(outside).digest('hex')}`;
    await writeFile(path.join(outside, 'secret.txt'), secret);
    await mkdir(path.join(outside, 'dir'));
    await writeFile(path.join(outside, 'dir', 'inner.txt'), secret);
    const ctx = await makeContext({
      Dockerfile: 'FROM scratch\nCOPY . /\n',
      abs: { symlink: path.join(outside, 'secret.txt') },
      rel: { symlink: path.relative('/x/y', path.join(outside, 'secret.txt')) },
      dirlink: { symlink: path.join(outside, 'dir') },
    });
    try {
      const plan = await planContext({ contextDir: ctx.dir, cwd: '/' });
      assert.deepEqual(pathsOf(plan).sort(), ['Dockerfile', 'abs', 'dirlink', 'rel']);
      const tar = await tarOf(plan);
      assert.equal(tar.includes(Buffer.from(secret)), false, 'content from outside the context was sent');
      const listing = execFileSync('/bin/tar', ['-tvf', '-'], { input: tar, encoding: 'utf8' });
      assert.match(listing, new RegExp(`^l.* abs -> ${outside}/secret\\.txt$`, 'm'));
      assert.match(listing, new RegExp(`^l.* dirlink -> ${outside}/dir$`, 'm'));
      // The server takes such links as they are (BuildKit resolves them inside the build's root),
      // and the worker's extractor recreates them as links, writing nothing outside.
      const validator = createContextValidator({ dockerfilePath: plan.dockerfile });
      await pipeline(PassThrough.from(tar), validator.stream, new PassThrough().resume());
      assert.equal((await validator.result).entries, 4);
      const out = path.join(work, 'links-extract');
      await extractContext(PassThrough.from(tar), out);
      assert.equal(await readlink(path.join(out, 'abs')), path.join(outside, 'secret.txt'));
      assert.deepEqual((await readdir(outside)).sort(), ['dir', 'secret.txt']);
      assert.equal(await readFile(path.join(outside, 'secret.txt'), 'utf8'), secret);
    } finally {
      await ctx.cleanup();
      await rm(outside, { recursive: true, force: true });
    }
  });

  test('a bad pattern is an error naming the file', async () => {
    const ctx = await makeContext({ Dockerfile: 'FROM scratch\n', '.dockerignore': '[\n' });
    try {
      await assert.rejects(
        planContext({ contextDir: ctx.dir, cwd: '/' }),
        /\.dockerignore: .*syntax error in pattern/,
      );
    } finally {
      await ctx.cleanup();
    }
  });

  test('Ctrl-C stops the walk at the next entry, with its reason', async () => {
    const files = Object.fromEntries(Array.from({ length: 200 }, (_, i) => [`f${i}`, 'x']));
    const ctx = await makeContext({ Dockerfile: 'FROM scratch\n', ...files });
    try {
      const reason = new Error('interrupted');
      const controller = new AbortController();
      const planning = planContext({ contextDir: ctx.dir, cwd: '/', signal: controller.signal });
      controller.abort(reason);
      await assert.rejects(planning, (err) => err === reason);
    } finally {
      await ctx.cleanup();
    }
  });
});

/** type, mode, size, content hash, link target and mtime (ns) of everything below `root`. */
async function describeTree(root: string): Promise<Record<string, string>> {
  const out: Record<string, string> = {};
  const visit = async (rel: string) => {
    for (const name of (await readdir(path.join(root, rel))).sort()) {
      const r = rel ? `${rel}/${name}` : name;
      const st = await lstat(path.join(root, r), { bigint: true });
      const mode = (Number(st.mode) & 0o7777).toString(8);
      if (st.isSymbolicLink()) out[r] = `symlink -> ${await readlink(path.join(root, r))}`;
      else if (st.isDirectory()) {
        out[r] = `dir ${mode}`;
        await visit(r);
      } else {
        const hash = createHash('sha256')
          .update(await readFile(path.join(root, r)))
          .digest('hex')
          .slice(0, 16);
        out[r] = `file ${mode} ${st.size} ${hash} mtime=${st.mtimeNs}`;
      }
    }
  };
  await visit('');
  return out;
}

describe('context tar', () => {
  const files = {
    Dockerfile: 'FROM scratch\nCOPY . /\n',
    'bin/tool': { content: '#!/bin/sh\necho hi\n', mode: 0o755 },
    'bin/suid': { content: 'x', mode: 0o4755 },
    'shared/': { dir: true as const, mode: 0o2775 },
    'tmp/': { dir: true as const, mode: 0o1777 },
    'readonly.txt': { content: 'ro', mode: 0o444 },
    'data/big.bin': Buffer.alloc(3 * 1024 * 1024 + 7, 0x5a),
    'data/empty': '',
    [`deep/${'d'.repeat(120)}/${'e'.repeat(120)}/${'f'.repeat(40)}.txt`]: 'long name',
    'héllo wörld.txt': 'unicode',
    'links/rel': { symlink: '../bin/tool' },
    'links/abs': { symlink: '/etc/passwd' },
    'links/dangling': { symlink: 'nowhere' },
    'links/hard': { hardlinkTo: 'bin/tool' },
    'ignored/x': 'x',
    '.dockerignore': 'ignored\n',
  };

  test('GNU tar reads it back: every selected entry with mode, owner 0/0, link and content', async () => {
    const ctx = await makeContext(files);
    try {
      const plan = await planContext({ contextDir: ctx.dir, cwd: '/' });
      const tar = await tarOf(plan);
      const listing = execFileSync('/bin/tar', ['--numeric-owner', '-tvf', '-'], {
        input: tar,
        encoding: 'utf8',
      })
        .trim()
        .split('\n');
      const names = execFileSync('/bin/tar', ['-tf', '-'], { input: tar, encoding: 'utf8' })
        .trim()
        .split('\n');
      const byName = new Map(names.map((n, i) => [n.replace(/\/$/, ''), listing[i] ?? '']));
      assert.deepEqual([...byName.keys()], pathsOf(plan));
      for (const line of listing) assert.match(line, /^\S+ 0\/0 /, line);
      assert.match(byName.get('bin/suid') ?? '', /^-rwsr-xr-x /);
      assert.match(byName.get('shared') ?? '', /^drwxrwsr-x /);
      assert.match(byName.get('tmp') ?? '', /^drwxrwxrwt /);
      assert.match(byName.get('links/rel') ?? '', /^lrwxrwxrwx .* links\/rel -> \.\.\/bin\/tool$/);
      assert.match(byName.get('links/hard') ?? '', /^hrwxr-xr-x .* links\/hard link to bin\/tool$/);

      const out = path.join(work, 'gnu-extract');
      await mkdir(out);
      execFileSync('/bin/tar', ['-xpf', '-', '-C', out], { input: tar });
      const source = await describeTree(ctx.dir);
      delete source.ignored;
      delete source['ignored/x'];
      const extracted = await describeTree(out);
      // GNU tar sets directory mtimes as it goes; compare everything else exactly, mtimes of files to the ns.
      assert.deepEqual(extracted, source);
    } finally {
      await ctx.cleanup();
    }
  });

  test("the server's validator accepts it and the worker's extractor rebuilds the same tree", async () => {
    const ctx = await makeContext(files);
    try {
      const plan = await planContext({ contextDir: ctx.dir, cwd: '/' });
      const validator = createContextValidator({ dockerfilePath: plan.dockerfile });
      const tarCopy = new PassThrough();
      const chunks: Buffer[] = [];
      tarCopy.on('data', (c: Buffer) => chunks.push(c));
      await pipeline(contextTarStream(plan), validator.stream, tarCopy);
      const summary = await validator.result;
      assert.equal(summary.entries, plan.items.length);
      const tar = Buffer.concat(chunks);
      assert.equal(summary.sha256, createHash('sha256').update(tar).digest('hex'));

      const out = path.join(work, 'core-extract');
      await extractContext(PassThrough.from(tar), out);
      const source = await describeTree(ctx.dir);
      delete source.ignored;
      delete source['ignored/x'];
      const extracted = await describeTree(out);
      // Node's utimes takes a double: the extractor keeps mtimes to within a microsecond or two.
      const split = (t: Record<string, string>) =>
        Object.entries(t).map(
          ([k, v]) => [k, v.replace(/ mtime=\d+$/, ''), BigInt(v.match(/mtime=(\d+)$/)?.[1] ?? 0)] as const,
        );
      const want = split(source);
      const got = split(extracted);
      assert.deepEqual(
        got.map(([k, v]) => [k, v]),
        want.map(([k, v]) => [k, v]),
      );
      got.forEach(([k, , mtime], i) => {
        const diff = mtime - (want[i]?.[2] ?? 0n);
        assert.ok(diff < 3000n && diff > -3000n, `${k}: mtime off by ${diff} ns`);
      });
      // Same files, same archive: the context is content-addressed on the server.
      assert.deepEqual(await tarOf(await planContext({ contextDir: ctx.dir, cwd: '/' })), tar);
    } finally {
      await ctx.cleanup();
    }
  });

  test('a file changed after the walk is sent as it is when opened', async () => {
    const ctx = await makeContext({ Dockerfile: 'FROM scratch\n', big: Buffer.alloc(1 << 20, 1) });
    try {
      const plan = await planContext({ contextDir: ctx.dir, cwd: '/' });
      await writeFile(path.join(ctx.dir, 'big'), 'short');
      // The size is taken when the file is opened: a file cut before that is sent at its new size.
      const tar = await tarOf(plan);
      assert.match(execFileSync('/bin/tar', ['-tvf', '-'], { input: tar, encoding: 'utf8' }), / 5 .* big\n/);
    } finally {
      await ctx.cleanup();
    }
  });
});
