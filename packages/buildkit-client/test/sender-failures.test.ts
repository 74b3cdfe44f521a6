// No hang, ever: whatever fails on the sending side of a context transfer ends the solve with a
// clear message within a bounded time, on both BuildKit generations. Each failure is provoked
// many times in a row, since a lost status hung only some of the runs (7 of 12 before the fix).
import assert from 'node:assert/strict';
import { createWriteStream } from 'node:fs';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import {
  type BuildkitClient,
  BuildkitError,
  connect,
  type ExportEntry,
  type StatusEvent,
} from '../src/index.js';
import { ctlBuild } from '../test-support/buildctl.js';
import { makeContext } from '../test-support/context.js';
import { type Forwarder, startForwarder } from '../test-support/forwarder.js';
import { DEVELOPER } from '../test-support/run.js';

const dockerSocket = process.env.KILN_TEST_DOCKER_SOCK;
const buildkitdAddr = process.env.KILN_TEST_BUILDKITD_ADDR ?? '';
if (!dockerSocket || !buildkitdAddr.startsWith('unix://'))
  throw new Error(
    'KILN_TEST_DOCKER_SOCK and KILN_TEST_BUILDKITD_ADDR (unix://) are not set: run through `npm test`',
  );

const RUNS = 20;
/** Generous: every solve here ends in about a second. */
const BOUND_MS = 60_000;

/**
 * Solves a Dockerfile build with no cache and resolves to its error (undefined on success);
 * rejects if it has not ended within BOUND_MS.
 */
async function solveEnds(
  what: string,
  client: BuildkitClient,
  localDirs: { context: string; dockerfile: string },
  exportTo: ExportEntry,
  onStatus?: (e: StatusEvent) => void,
): Promise<Error | undefined> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what}: still running after ${BOUND_MS} ms`)), BOUND_MS);
  });
  const solve = client
    .solve(
      { frontend: 'dockerfile.v0', frontendAttrs: { 'no-cache': '' }, localDirs, exports: [exportTo] },
      onStatus,
    )
    .then(
      () => undefined,
      (err: unknown) => err as Error,
    );
  try {
    return await Promise.race([solve, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

/** A status listener that runs `action` once, when the build context's transfer starts. */
function onContextTransfer(action: () => void): (e: StatusEvent) => void {
  let done = false;
  return (e) => {
    if (done || e.type !== 'vertex' || e.state !== 'started' || !e.vertex.name.includes('build context'))
      return;
    done = true;
    action();
  };
}

describe('sender-side failures end the solve', () => {
  let work: string;
  const forwarders: Forwarder[] = [];
  before(async () => {
    work = await fs.mkdtemp(path.join(os.tmpdir(), 'bkc-sender-'));
    await fs.chmod(work, 0o777);
  });
  after(async () => {
    for (const f of forwarders) await f.close();
    await fs.rm(work, { recursive: true, force: true });
  });

  const generations = [
    { name: 'dockerd 20.10 (BuildKit 0.8)', scheme: 'docker', socket: dockerSocket },
    { name: 'buildkitd v0.24.0', scheme: 'unix', socket: buildkitdAddr.slice('unix://'.length) },
  ];

  for (const g of generations) {
    describe(g.name, () => {
      /** A fresh world-writable path to the daemon, whose connections a test may cut. */
      const forwarder = async (): Promise<Forwarder> => {
        const f = await startForwarder(g.socket, path.join(work, `fwd-${forwarders.length}.sock`));
        forwarders.push(f);
        return f;
      };

      test(`an unreadable directory (a walk error) fails every build with the sender's error, ${RUNS}x`, async () => {
        const ctx = await makeContext({
          Dockerfile: 'FROM scratch\nCOPY . /ctx/\n',
          'a.txt': 'a',
          'locked/secret': 's',
        });
        try {
          await fs.chmod(ctx.dir, 0o755);
          // Root's and closed to others: the developer's walk cannot list it.
          await fs.chmod(path.join(ctx.dir, 'locked'), 0o700);
          const fwd = await forwarder();
          const build = (program: 'buildctl' | 'bkctl') =>
            ctlBuild(program, {
              addr: `${g.scheme}://${fwd.socketPath}`,
              contextDir: ctx.dir,
              dockerfileDir: ctx.dir,
              opts: { 'no-cache': '' },
              dest: path.join(work, `${program}.tar`),
              asUser: DEVELOPER,
              timeoutMs: BOUND_MS,
            });
          if (g.scheme === 'unix') {
            // The reference fails the same way (buildctl cannot reach dockerd's embedded BuildKit).
            const ref = await build('buildctl');
            assert.equal(ref.code, 1, ref.stderr);
            assert.match(ref.stderr, /error from sender: open \S*\/locked: permission denied/);
          }
          for (let i = 0; i < RUNS; i++) {
            const r = await build('bkctl');
            assert.equal(r.timedOut, false, `run ${i} hung`);
            assert.equal(r.code, 1, `run ${i}: ${r.stderr}`);
            assert.match(r.stderr, /error from sender: EACCES: permission denied, scandir '.*\/locked'/);
          }
        } finally {
          await ctx.cleanup();
        }
      });

      test(`the connection cut mid-transfer (a stream reset) ends every solve, ${RUNS}x`, async () => {
        const ctx = await makeContext({
          Dockerfile: 'FROM scratch\nCOPY big.bin /big.bin\n',
          'big.bin': Buffer.alloc(64 * 1024 * 1024, 0x5a),
        });
        try {
          for (let i = 0; i < RUNS; i++) {
            const fwd = await forwarder();
            const client = await connect(`${g.scheme}://${fwd.socketPath}`);
            try {
              const err = await solveEnds(
                `run ${i}`,
                client,
                { context: ctx.dir, dockerfile: ctx.dir },
                { type: 'tar', output: createWriteStream(path.join(work, 'reset.tar')) },
                onContextTransfer(() => fwd.cutAll()),
              );
              assert.ok(err instanceof BuildkitError, `run ${i}: ${err?.stack ?? 'the build succeeded'}`);
            } finally {
              await client.close();
            }
          }
        } finally {
          await ctx.cleanup();
        }
      });

      test('a session connection the daemon cannot be reached on ends the solve', async () => {
        const ctx = await makeContext({ Dockerfile: 'FROM scratch\nCOPY a.txt /a.txt\n', 'a.txt': 'a' });
        const fwd = await forwarder();
        const client = await connect(`${g.scheme}://${fwd.socketPath}`);
        try {
          // The control channel stays up; each session opens a connection of its own, refused now.
          fwd.refuseNew();
          const err = await solveEnds(
            'refused session',
            client,
            { context: ctx.dir, dockerfile: ctx.dir },
            { type: 'tar', output: createWriteStream(path.join(work, 'refused.tar')) },
          );
          assert.ok(err instanceof BuildkitError, err?.stack ?? 'the build succeeded');
          if (g.scheme === 'unix') assert.match(err.message, /lost the session connection to BuildKit/);
        } finally {
          await client.close();
          await ctx.cleanup();
        }
      });

      test(`a context directory that vanishes before its walk fails every solve clearly, ${RUNS}x`, async () => {
        const dockerfileCtx = await makeContext({ Dockerfile: 'FROM scratch\nCOPY . /ctx/\n' });
        const client = await connect(`${g.scheme}://${g.socket}`);
        try {
          for (let i = 0; i < RUNS; i++) {
            const ctx = await makeContext({ 'a.txt': 'a' });
            await ctx.cleanup();
            const err = await solveEnds(
              `run ${i}`,
              client,
              { context: ctx.dir, dockerfile: dockerfileCtx.dir },
              { type: 'tar', output: createWriteStream(path.join(work, 'vanished.tar')) },
            );
            assert.ok(err instanceof BuildkitError, `run ${i}: ${err?.stack ?? 'the build succeeded'}`);
            assert.match(err.message, /error from sender: ENOENT/);
          }
        } finally {
          await client.close();
          await dockerfileCtx.cleanup();
        }
      });

      test('files and directories deleted during the transfer: the solve ends, what is left is whole or empty', async () => {
        const files = Object.fromEntries(
          Array.from({ length: 2000 }, (_, i) => [`files/d${i % 20}/f${i}.txt`, `file ${i}\n`]),
        );
        const client = await connect(`${g.scheme}://${g.socket}`);
        try {
          for (let i = 0; i < 5; i++) {
            const ctx = await makeContext({ Dockerfile: 'FROM scratch\nCOPY . /ctx/\n', ...files });
            const dest = path.join(work, 'vanishing');
            await fs.rm(dest, { recursive: true, force: true });
            try {
              let removing: Promise<void> | undefined;
              const err = await solveEnds(
                `run ${i}`,
                client,
                { context: ctx.dir, dockerfile: ctx.dir },
                { type: 'local', dir: dest },
                onContextTransfer(() => {
                  removing = fs.rm(path.join(ctx.dir, 'files'), { recursive: true, force: true });
                }),
              );
              await removing;
              // fsutil's semantics: gone before its stat = left out, gone after = an empty file.
              assert.equal(err, undefined, `run ${i}: ${err?.stack}`);
              const left = await fs
                .readdir(path.join(dest, 'ctx', 'files'), { recursive: true })
                .catch(() => []);
              for (const rel of left) {
                const abs = path.join(dest, 'ctx', 'files', rel);
                if ((await fs.stat(abs)).isDirectory()) continue;
                const n = Number(/f(\d+)\.txt$/.exec(rel)?.[1]);
                const content = await fs.readFile(abs, 'utf8');
                assert.ok(content === '' || content === `file ${n}\n`, `${rel}: ${JSON.stringify(content)}`);
              }
            } finally {
              await ctx.cleanup();
            }
          }
        } finally {
          await client.close();
        }
      });
    });
  }
});
