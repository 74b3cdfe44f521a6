// Fidelity corpus: every case builds the same context twice on the same daemon, once with the
// reference client and once with this one, and the two tarballs must hold the same entries in
// the same order with the same metadata and contents. Two BuildKit generations: dockerd 20.10's
// embedded BuildKit 0.8 against `/usr/bin/docker build --output type=tar`, and a standalone
// buildkitd v0.24.0 against `buildctl build ... --output type=tar` (bkctl with the same flags).
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { createWriteStream } from 'node:fs';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { promisify } from 'node:util';
import { type BuildkitClient, connect } from '../src/index.js';
import { ctlBuild } from '../test-support/buildctl.js';
import { busyboxPath, makeContext, SPECIAL_FILES } from '../test-support/context.js';
import { dockerBuildTar } from '../test-support/docker.js';
import { type Forwarder, startForwarder } from '../test-support/forwarder.js';
import { DEVELOPER, type RunResult, type User } from '../test-support/run.js';
import { compareTarEntries, readTarEntries } from '../test-support/tar-entries.js';

const execFileAsync = promisify(execFile);
const dockerSocket = process.env.KILN_TEST_DOCKER_SOCK;
const buildkitdAddr = process.env.KILN_TEST_BUILDKITD_ADDR ?? '';
if (!dockerSocket || !buildkitdAddr.startsWith('unix://'))
  throw new Error(
    'KILN_TEST_DOCKER_SOCK and KILN_TEST_BUILDKITD_ADDR (unix://) are not set: run through `npm test`',
  );

type Files = Parameters<typeof makeContext>[0];
interface Case {
  name: string;
  files: Files;
  dockerfile?: string; // path inside the context, default Dockerfile
  target?: string;
  buildArgs?: Record<string, string>;
  /** The build RUNs something: its outputs carry the time of the run, so mtimes can't match. */
  runs?: boolean;
  /**
   * The whole context belongs to this user and both clients run as it (a developer's checkout);
   * then the client under test is bkctl, with the reference's own flags.
   */
  asUser?: User;
  /** Owners to set after creating the context (the tests run as root). */
  chown?: Record<string, [number, number]>;
  check?: (names: string[]) => void;
}

const BUSYBOX = { busybox: { content: await fs.readFile(busyboxPath()), mode: 0o755 } };
const RUN = (script: string) => `RUN ["/bin/busybox", "sh", "-c", ${JSON.stringify(script)}]`;

const cases: Case[] = [
  {
    name: 'a unix socket, a fifo and a character device',
    files: SPECIAL_FILES,
    // The socket becomes an empty regular file with its permission bits (the entry comparison
    // checks type, mode and data); BuildKit 0.8 leaves the fifo out of the export, v0.24 keeps it.
    check: (n) => assert.ok(n.includes('ctx/socket.sock') && n.includes('ctx/dev/null-dev'), n.join(',')),
  },
  {
    name: 'context owned by a non-root user, built as that user (socket, fifo, unreadable files)',
    asUser: DEVELOPER,
    files: {
      Dockerfile: 'FROM scratch\nCOPY . /ctx/\n',
      '.dockerignore': 'ignored\n',
      'src/main.c': 'int main(){}\n',
      'exec.sh': { content: '#!/bin/sh\n', mode: 0o755 },
      'link-rel': { symlink: 'src/main.c' },
      'hard-a': 'same inode\n',
      'hard-b': { hardlinkTo: 'hard-a' },
      'socket.sock': { special: 'socket', mode: 0o600 },
      fifo: { special: 'fifo' },
      // Root's, unreadable to the developer: opening fails, so it goes empty.
      'root-only': { content: 'not yours\n', mode: 0o600 },
      'no-perms': { content: "nobody's\n", mode: 0o000 },
      ignored: 'x',
    },
    chown: { 'root-only': [0, 0], 'no-perms': [0, 0] },
    check: (n) => assert.ok(n.includes('ctx/root-only') && !n.includes('ctx/ignored'), n.join(',')),
  },
  {
    name: 'single COPY',
    files: { Dockerfile: 'FROM scratch\nCOPY hello.txt /hello.txt\n', 'hello.txt': 'hello\n' },
    check: (n) => assert.deepEqual(n, ['hello.txt']),
  },
  {
    name: 'compiled-app pattern: builder stage RUNs, final stage copies one file',
    runs: true,
    files: {
      ...BUSYBOX,
      Dockerfile: [
        'FROM scratch AS builder',
        'COPY busybox /bin/busybox',
        RUN(
          '/bin/busybox mkdir -p /out && /bin/busybox echo built > /out/app && /bin/busybox chmod 0751 /out/app',
        ),
        'FROM scratch',
        'COPY --from=builder /out/app /app',
        '',
      ].join('\n'),
    },
    check: (n) => assert.deepEqual(n, ['app']),
  },
  {
    name: 'target = the builder stage',
    runs: true,
    target: 'builder',
    files: {
      ...BUSYBOX,
      Dockerfile: [
        'FROM scratch AS builder',
        'COPY busybox /bin/busybox',
        RUN('/bin/busybox mkdir -p /out && /bin/busybox echo built > /out/app'),
        'FROM scratch',
        'COPY --from=builder /out/app /app',
        '',
      ].join('\n'),
    },
    check: (n) => assert.ok(n.includes('bin/busybox') && n.includes('out/app'), n.join(',')),
  },
  {
    name: 'names that sort differently by byte and by path, symlinks, a hardlink, modes',
    files: {
      Dockerfile: 'FROM scratch\nCOPY . /ctx/\n',
      'sub/x': 'x',
      'sub/y/z': 'z',
      'sub-dir/a': 'a',
      'sub.dir/b': 'b',
      'sub0/c': 'c',
      'exec.sh': { content: '#!/bin/sh\n', mode: 0o755 },
      'secret.conf': { content: 'k=v\n', mode: 0o640 },
      'link-rel': { symlink: 'sub/x' },
      'link-abs': { symlink: '/etc/passwd' },
      'hard-a': 'same inode\n',
      'hard-b': { hardlinkTo: 'hard-a' },
      'owned-by-1234': 'docker sends every file as 0:0',
    },
    chown: { 'owned-by-1234': [1234, 4321], sub: [42, 42] },
  },
  {
    name: 'a 50 MB file',
    files: {
      Dockerfile: 'FROM scratch\nCOPY big.bin /big.bin\n',
      'big.bin': Buffer.alloc(50 * 1024 * 1024, 0x5a),
    },
  },
  {
    name: '.dockerignore with **, ! and a leading /',
    files: {
      Dockerfile: 'FROM scratch\nCOPY . /ctx/\n',
      '.dockerignore': '**/*.log\n!keep/important.log\n/root-only.txt\nnode_modules\n# comment\n',
      'a.log': 'x',
      'deep/er/b.log': 'x',
      'keep/important.log': 'kept',
      'keep/other.log': 'x',
      'root-only.txt': 'x',
      'nested/root-only.txt': 'kept',
      'node_modules/m/index.js': 'x',
      'src/main.c': 'int main(){}',
    },
    check: (n) => {
      assert.ok(n.includes('ctx/keep/important.log'));
      assert.ok(n.includes('ctx/nested/root-only.txt'));
      assert.ok(
        !n.some((x) => x.endsWith('a.log') || x.includes('node_modules') || x === 'ctx/root-only.txt'),
      );
    },
  },
  {
    name: 'Dockerfile under another name and directory',
    dockerfile: 'build/Release.dockerfile',
    files: { 'build/Release.dockerfile': 'FROM scratch\nCOPY app.txt /release/app.txt\n', 'app.txt': 'r\n' },
    check: (n) => assert.deepEqual(n, ['release', 'release/app.txt']),
  },
  {
    name: 'build args',
    runs: true,
    buildArgs: { GREETING: 'hej', UNUSED: 'x' },
    files: {
      ...BUSYBOX,
      Dockerfile: [
        'FROM scratch AS b',
        'ARG GREETING=hello',
        'COPY busybox /bin/busybox',
        RUN('/bin/busybox echo "$GREETING world" > /greeting'),
        'FROM scratch',
        'COPY --from=b /greeting /greeting',
        '',
      ].join('\n'),
    },
  },
  {
    name: '2,000 small files',
    files: Object.fromEntries([
      ['Dockerfile', 'FROM scratch\nCOPY files /files\n'],
      ...Array.from({ length: 2000 }, (_, i) => [`files/d${i % 20}/f${i}.txt`, `file ${i}\n`]),
    ]),
  },
];

interface Generation {
  name: string;
  /** Address the in-process client and bkctl use, for root and for another user. */
  address: string;
  addressForUser: () => string;
  reference: (c: Case, ctxDir: string, dest: string) => Promise<void>;
}

function expectSuccess(what: string, r: RunResult): void {
  if (r.code !== 0) throw new Error(`${what} failed (exit ${r.code}):\n${r.stderr.slice(-4000)}`);
}

describe('fidelity corpus', () => {
  let work: string;
  let dockerFwd: Forwarder;
  let buildkitdFwd: Forwarder;
  const clients = new Map<string, BuildkitClient>();
  before(async () => {
    work = await fs.mkdtemp(path.join(os.tmpdir(), 'bkc-fidelity-'));
    // Another user reaches the root-only daemon sockets through world-writable forwarders and
    // writes its tars here.
    await fs.chmod(work, 0o777);
    dockerFwd = await startForwarder(dockerSocket, path.join(work, 'docker.sock'));
    buildkitdFwd = await startForwarder(
      buildkitdAddr.slice('unix://'.length),
      path.join(work, 'buildkitd.sock'),
    );
  });
  after(async () => {
    for (const c of clients.values()) await c.close();
    await dockerFwd.close();
    await buildkitdFwd.close();
    await fs.rm(work, { recursive: true, force: true });
  });

  const dockerfileOf = (c: Case) => c.dockerfile ?? 'Dockerfile';
  const generations: Generation[] = [
    {
      name: 'dockerd 20.10 (BuildKit 0.8) against docker build',
      address: `docker://${dockerSocket}`,
      addressForUser: () => `docker://${dockerFwd.socketPath}`,
      reference: async (c, ctxDir, dest) => {
        await dockerBuildTar({
          socket: c.asUser ? dockerFwd.socketPath : dockerSocket,
          contextDir: ctxDir,
          dockerfile: path.join(ctxDir, dockerfileOf(c)),
          ...(c.target ? { target: c.target } : {}),
          ...(c.buildArgs ? { buildArgs: c.buildArgs } : {}),
          ...(c.asUser ? { asUser: c.asUser } : {}),
          noCache: true,
          dest,
        });
      },
    },
    {
      name: 'buildkitd v0.24.0 against buildctl',
      address: buildkitdAddr,
      addressForUser: () => `unix://${buildkitdFwd.socketPath}`,
      reference: async (c, ctxDir, dest) =>
        expectSuccess(
          'buildctl',
          await ctlBuild('buildctl', {
            addr: c.asUser ? `unix://${buildkitdFwd.socketPath}` : buildkitdAddr,
            ...ctlDirs(c, ctxDir),
            opts: { 'no-cache': '' },
            dest,
            ...(c.asUser ? { asUser: c.asUser } : {}),
          }),
        ),
    },
  ];

  const ctlDirs = (c: Case, ctxDir: string) => ({
    contextDir: ctxDir,
    dockerfileDir: path.join(ctxDir, path.dirname(dockerfileOf(c))),
    filename: path.basename(dockerfileOf(c)),
    ...(c.target ? { target: c.target } : {}),
    ...(c.buildArgs ? { buildArgs: c.buildArgs } : {}),
  });

  for (const g of generations) {
    describe(g.name, () => {
      for (const c of cases) {
        test(c.name, async () => {
          const ctx = await makeContext(c.files);
          try {
            if (c.asUser) {
              await fs.chmod(ctx.dir, 0o755);
              await execFileAsync('chown', ['-R', '-h', `${c.asUser.uid}:${c.asUser.gid}`, ctx.dir]);
            }
            for (const [rel, [uid, gid]] of Object.entries(c.chown ?? {}))
              await fs.lchown(path.join(ctx.dir, rel), uid, gid);
            const expectedTar = path.join(work, 'reference.tar');
            const actualTar = path.join(work, 'client.tar');
            await fs.rm(expectedTar, { force: true });
            await fs.rm(actualTar, { force: true });
            await g.reference(c, ctx.dir, expectedTar);
            // Both sides build without cache: BuildKit's cache keys ignore mtimes, so a COPY
            // cached by another test on the same daemon would carry that test's mtimes.
            if (c.asUser) {
              expectSuccess(
                'bkctl',
                await ctlBuild('bkctl', {
                  addr: g.addressForUser(),
                  ...ctlDirs(c, ctx.dir),
                  opts: { 'no-cache': '' },
                  dest: actualTar,
                  asUser: c.asUser,
                }),
              );
            } else {
              await solveInProcess(g.address, c, ctx.dir, actualTar);
            }
            const expected = await readTarEntries(expectedTar);
            const actual = await readTarEntries(actualTar);
            assert.ok(expected.length > 0, 'the reference exported nothing');
            assert.deepEqual(
              compareTarEntries(expected, actual, { compareMtime: !c.runs, ignoreDirMtime: true }),
              [],
            );
            c.check?.(actual.map((e) => e.name.replace(/\/$/, '')));
          } finally {
            await ctx.cleanup();
          }
        });
      }
    });
  }

  test('keepOwnership (bkctl --keep-ownership) sends the host owners instead of 0:0', async () => {
    const ctx = await makeContext({ Dockerfile: 'FROM scratch\nCOPY . /ctx/\n', 'mine.txt': 'x' });
    try {
      await fs.lchown(path.join(ctx.dir, 'mine.txt'), DEVELOPER.uid, DEVELOPER.gid);
      const dest = path.join(work, 'keep.tar');
      expectSuccess(
        'bkctl',
        await ctlBuild('bkctl', {
          addr: buildkitdAddr,
          ...ctlDirs({ name: '', files: {} }, ctx.dir),
          opts: { 'no-cache': '' },
          flags: ['--keep-ownership'],
          dest,
        }),
      );
      const mine = (await readTarEntries(dest)).find((e) => e.name === 'ctx/mine.txt');
      assert.deepEqual([mine?.uid, mine?.gid], [DEVELOPER.uid, DEVELOPER.gid]);
    } finally {
      await ctx.cleanup();
    }
  });

  async function solveInProcess(address: string, c: Case, ctxDir: string, dest: string): Promise<void> {
    let client = clients.get(address);
    if (!client) {
      client = await connect(address);
      clients.set(address, client);
    }
    const dockerfile = dockerfileOf(c);
    await client.solve({
      frontend: 'dockerfile.v0',
      frontendAttrs: {
        'no-cache': '',
        filename: path.basename(dockerfile),
        'force-network-mode': 'none',
        ...(c.target ? { target: c.target } : {}),
        ...Object.fromEntries(Object.entries(c.buildArgs ?? {}).map(([k, v]) => [`build-arg:${k}`, v])),
      },
      localDirs: { context: ctxDir, dockerfile: path.join(ctxDir, path.dirname(dockerfile)) },
      exports: [{ type: 'tar', output: createWriteStream(dest) }],
    });
  }
});
