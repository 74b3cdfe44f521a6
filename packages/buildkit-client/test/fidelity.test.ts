// Fidelity corpus: every case builds the same context twice on the same private dockerd,
// once with `/usr/bin/docker build --output` and once with this client, and the two tarballs
// must hold the same entries in the same order with the same metadata and contents.
import assert from 'node:assert/strict';
import { createWriteStream } from 'node:fs';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { type BuildkitClient, connect } from '../src/index.js';
import { busyboxPath, makeContext } from '../test-support/context.js';
import { dockerBuildTar } from '../test-support/docker.js';
import { compareTarEntries, readTarEntries } from '../test-support/tar-entries.js';

const socket = process.env.KILN_TEST_DOCKER_SOCK;
if (!socket) throw new Error('KILN_TEST_DOCKER_SOCK is not set: run through `npm test`');

type Files = Parameters<typeof makeContext>[0];
interface Case {
  name: string;
  files: Files;
  dockerfile?: string; // path inside the context, default Dockerfile
  target?: string;
  buildArgs?: Record<string, string>;
  /** The build RUNs something: its outputs carry the time of the run, so mtimes can't match. */
  runs?: boolean;
  /** Owners to set after creating the context (the tests run as root). */
  chown?: Record<string, [number, number]>;
  check?: (names: string[]) => void;
}

const BUSYBOX = { busybox: { content: await fs.readFile(busyboxPath()), mode: 0o755 } };
const RUN = (script: string) => `RUN ["/bin/busybox", "sh", "-c", ${JSON.stringify(script)}]`;

const cases: Case[] = [
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

describe('fidelity against docker build --output type=tar', () => {
  let client: BuildkitClient;
  let work: string;
  before(async () => {
    client = await connect(`docker://${socket}`);
    work = await fs.mkdtemp(path.join(os.tmpdir(), 'bkc-fidelity-'));
  });
  after(async () => {
    await client.close();
    await fs.rm(work, { recursive: true, force: true });
  });

  for (const c of cases) {
    test(c.name, async () => {
      const ctx = await makeContext(c.files);
      try {
        for (const [rel, [uid, gid]] of Object.entries(c.chown ?? {}))
          await fs.chown(path.join(ctx.dir, rel), uid, gid);
        const dockerfile = c.dockerfile ?? 'Dockerfile';
        const expectedTar = path.join(work, 'docker.tar');
        const actualTar = path.join(work, 'client.tar');
        await dockerBuildTar({
          socket,
          contextDir: ctx.dir,
          dockerfile: path.join(ctx.dir, dockerfile),
          ...(c.target ? { target: c.target } : {}),
          ...(c.buildArgs ? { buildArgs: c.buildArgs } : {}),
          dest: expectedTar,
        });
        await client.solve({
          frontend: 'dockerfile.v0',
          frontendAttrs: {
            // Without it BuildKit may answer from the docker build's cache, which ignores owners and mtimes.
            'no-cache': '',
            filename: path.basename(dockerfile),
            'force-network-mode': 'none',
            ...(c.target ? { target: c.target } : {}),
            ...Object.fromEntries(Object.entries(c.buildArgs ?? {}).map(([k, v]) => [`build-arg:${k}`, v])),
          },
          localDirs: {
            context: ctx.dir,
            dockerfile: path.join(ctx.dir, path.dirname(dockerfile)),
          },
          exports: [{ type: 'tar', output: createWriteStream(actualTar) }],
        });
        const expected = await readTarEntries(expectedTar);
        const actual = await readTarEntries(actualTar);
        assert.ok(expected.length > 0, 'docker exported nothing');
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
