// Behaviour of the client against a real dockerd: other exporters and transports,
// failures with the messages a user needs, cancellation, backpressure and the CLI.
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { Writable } from 'node:stream';
import { after, before, describe, test } from 'node:test';
import { promisify } from 'node:util';
import {
  type BuildkitClient,
  BuildkitConnectionError,
  CanceledError,
  connect,
  SolveError,
  type StatusEvent,
} from '../src/index.js';
import { busyboxPath, makeContext } from '../test-support/context.js';
import { dockerBuildLocal } from '../test-support/docker.js';
import { tarExport } from '../test-support/tar-export.js';

const run = promisify(execFile);
const socket = process.env.KILN_TEST_DOCKER_SOCK;
if (!socket) throw new Error('KILN_TEST_DOCKER_SOCK is not set: run through `npm test`');
const busybox = { content: await fs.readFile(busyboxPath()), mode: 0o755 };
const RUN = (script: string) => `RUN ["/bin/busybox", "sh", "-c", ${JSON.stringify(script)}]`;

function dockerfileSolve(dir: string, attrs: Record<string, string> = {}) {
  return {
    frontend: 'dockerfile.v0',
    frontendAttrs: { 'force-network-mode': 'none', ...attrs },
    localDirs: { context: dir, dockerfile: dir },
  };
}

/** Recursive listing with type, mode and content hash, for comparing two exported trees. */
async function tree(root: string): Promise<string[]> {
  const out: string[] = [];
  const walk = async (rel: string) => {
    const entries = await fs.readdir(path.join(root, rel), { withFileTypes: true });
    for (const e of entries.sort((a, b) => (a.name < b.name ? -1 : 1))) {
      const r = path.join(rel, e.name);
      const st = await fs.lstat(path.join(root, r));
      const mode = (st.mode & 0o7777).toString(8);
      if (e.isSymbolicLink()) out.push(`${r} link ${await fs.readlink(path.join(root, r))}`);
      else if (e.isDirectory()) {
        out.push(`${r}/ ${mode}`);
        await walk(r);
      } else
        out.push(
          `${r} ${mode} ${st.size} ${(await fs.readFile(path.join(root, r))).toString('base64').slice(0, 40)}`,
        );
    }
  };
  await walk('');
  return out;
}

describe('solve against a real dockerd', () => {
  let client: BuildkitClient;
  before(async () => {
    client = await connect(`docker://${socket}`);
  });
  after(() => client.close());

  test('listWorkers, info (unsupported on dockerd 20.10), diskUsage and prune', async () => {
    const workers = await client.listWorkers();
    assert.ok(workers.length >= 1);
    assert.ok(workers[0]?.platforms.some((p) => p.os === 'linux'));
    await client.info().then(
      (i) => assert.ok(i.buildkitVersion),
      (err: Error & { code?: string }) => assert.equal(err.code, 'UNSUPPORTED'),
    );
    const ctx = await makeContext({ Dockerfile: 'FROM scratch\nCOPY a /a\n', a: 'cache me' });
    try {
      await client.solve(dockerfileSolve(ctx.dir));
    } finally {
      await ctx.cleanup();
    }
    const usage = await client.diskUsage();
    assert.ok(usage.length > 0, 'the build left cache records');
    assert.ok(usage.every((r) => typeof r.id === 'string' && r.size >= 0));
    // A filter that matches nothing: the call round-trips and deletes nothing.
    assert.deepEqual(await client.prune({ filter: ['id==no-such-record'] }), []);
    assert.equal((await client.diskUsage()).length, usage.length);
  });

  test('local exporter writes the same tree as docker build --output type=local', async () => {
    const ctx = await makeContext({
      Dockerfile: 'FROM scratch\nCOPY . /\n',
      'a/b/c.txt': 'c',
      'x.sh': { content: '#!/bin/sh\n', mode: 0o755 },
      'p.conf': { content: 'p', mode: 0o640 },
      l: { symlink: 'a/b/c.txt' },
    });
    const work = await fs.mkdtemp(path.join(os.tmpdir(), 'bkc-local-'));
    try {
      await dockerBuildLocal({ socket, contextDir: ctx.dir, dest: path.join(work, 'docker') });
      await client.solve({
        ...dockerfileSolve(ctx.dir),
        exports: [{ type: 'local', dir: path.join(work, 'client') }],
      });
      const expected = await tree(path.join(work, 'docker'));
      assert.ok(expected.some((l) => l.startsWith('a/b/c.txt ')));
      assert.deepEqual(await tree(path.join(work, 'client')), expected);
    } finally {
      await ctx.cleanup();
      await fs.rm(work, { recursive: true, force: true });
    }
  });

  test('session tunnelled through Control.Session (the buildkitd path) gives the same output', async () => {
    const tunnelled = await connect(`docker://${socket}`, { sessionTransport: 'control' });
    const ctx = await makeContext({
      Dockerfile: 'FROM scratch\nCOPY f /f\n',
      f: Buffer.alloc(3 * 1024 * 1024, 1),
    });
    try {
      const exported = tarExport();
      await tunnelled.solve({ ...dockerfileSolve(ctx.dir), exports: [exported] });
      const tar = exported.bytes();
      assert.equal(tar.subarray(0, 1).toString(), 'f');
      assert.ok(tar.length > 3 * 1024 * 1024);
    } finally {
      await ctx.cleanup();
      await tunnelled.close();
    }
  });

  test('status events: RUN output arrives as log events and the plain renderer numbers vertices', async () => {
    const ctx = await makeContext({
      busybox,
      Dockerfile: `FROM scratch\nCOPY busybox /bin/busybox\n${RUN('echo marker-$((6*7)); echo to-stderr >&2')}\n`,
    });
    try {
      const events: StatusEvent[] = [];
      await client.solve({ ...dockerfileSolve(ctx.dir, { 'no-cache': '' }) }, (e) => events.push(e));
      const logs = events
        .filter((e) => e.type === 'log')
        .map((e) => (e.type === 'log' ? e.data.toString() : ''));
      assert.ok(logs.join('').includes('marker-42'), logs.join(''));
      const run = events.find(
        (e) => e.type === 'vertex' && e.state === 'completed' && e.vertex.name.includes('marker'),
      );
      assert.ok(run, 'RUN vertex completed');
      const { PlainProgressRenderer } = await import('../src/index.js');
      let text = '';
      const r = new PlainProgressRenderer((t) => {
        text += t;
      });
      for (const e of events) r.render(e);
      assert.match(text, /#\d+ \d+\.\d{3} marker-42/);
      assert.match(text, /#\d+ DONE \d+\.\ds/);
    } finally {
      await ctx.cleanup();
    }
  });

  test('cache exports reach the daemon; an exporter the daemon lacks is a clear SolveError', async () => {
    const ctx = await makeContext({ Dockerfile: 'FROM scratch\nCOPY a /a\n', a: 'a' });
    const discard = () =>
      new Writable({
        write(_c, _e, cb) {
          cb();
        },
      });
    try {
      await client.solve({
        ...dockerfileSolve(ctx.dir),
        exports: [{ type: 'tar', output: discard() }],
        cacheExports: [{ type: 'inline' }],
      });
      // Docker 20.10's BuildKit has no local cache exporter: its refusal proves the entry arrived.
      await assert.rejects(
        client.solve({
          ...dockerfileSolve(ctx.dir),
          cacheExports: [{ type: 'local', attrs: { dest: '/tmp/x' } }],
        }),
        (err: Error) => err instanceof SolveError && /unknown cache exporter: "local"/.test(err.message),
      );
      await assert.rejects(
        client.solve({ ...dockerfileSolve(ctx.dir), exports: [{ type: 'oci', output: discard() }] }),
        (err: Error) => err instanceof SolveError && /exporter "oci" could not be found/.test(err.message),
      );
    } finally {
      await ctx.cleanup();
    }
  });

  test('Dockerfile syntax error: SolveError whose message names the line', async () => {
    const ctx = await makeContext({ Dockerfile: 'FROM scratch\nCOPY a /a\nFROBNICATE now\n', a: 'a' });
    try {
      await assert.rejects(client.solve(dockerfileSolve(ctx.dir)), (err: Error) => {
        assert.ok(err instanceof SolveError, String(err));
        assert.match(err.message, /line 3/);
        assert.match(err.message, /unknown instruction/i);
        return true;
      });
    } finally {
      await ctx.cleanup();
    }
  });

  test('missing COPY source: SolveError naming the file and the failing step', async () => {
    const ctx = await makeContext({ Dockerfile: 'FROM scratch\nCOPY missing.txt /m\n' });
    try {
      await assert.rejects(client.solve(dockerfileSolve(ctx.dir)), (err: Error) => {
        assert.ok(err instanceof SolveError);
        assert.match(err.message, /missing\.txt/);
        assert.match(err.message, /not found/);
        return true;
      });
    } finally {
      await ctx.cleanup();
    }
  });

  test('unknown target stage: SolveError naming the stage', async () => {
    const ctx = await makeContext({ Dockerfile: 'FROM scratch AS one\nCOPY a /a\n', a: 'a' });
    try {
      await assert.rejects(client.solve(dockerfileSolve(ctx.dir, { target: 'nope' })), (err: Error) => {
        assert.ok(err instanceof SolveError);
        assert.match(err.message, /nope/);
        return true;
      });
    } finally {
      await ctx.cleanup();
    }
  });

  test('a failing RUN: SolveError with the vertex and the exit code', async () => {
    const ctx = await makeContext({
      busybox,
      Dockerfile: `FROM scratch\nCOPY busybox /bin/busybox\n${RUN('exit 3')}\n`,
    });
    try {
      await assert.rejects(client.solve(dockerfileSolve(ctx.dir)), (err: Error) => {
        assert.ok(err instanceof SolveError);
        assert.match(err.vertex ?? '', /exit 3/);
        assert.match(err.message, /exit code: 3/);
        return true;
      });
    } finally {
      await ctx.cleanup();
    }
  });

  test('cancel during a sleeping RUN: CanceledError and the process is gone from the host', async () => {
    const ctx = await makeContext({
      busybox,
      Dockerfile: `FROM scratch\nCOPY busybox /bin/busybox\n${RUN('sleep 317')}\n`,
    });
    const controller = new AbortController();
    const started = Date.now();
    try {
      const solving = client.solve(
        { ...dockerfileSolve(ctx.dir, { 'no-cache': '' }), signal: controller.signal },
        (e) => {
          if (e.type === 'vertex' && e.state === 'started' && e.vertex.name.includes('sleep 317')) {
            setTimeout(() => controller.abort(), 1000);
          }
        },
      );
      await assert.rejects(solving, CanceledError);
      assert.ok(Date.now() - started < 60_000);
      // The daemon tears the container down asynchronously; give it a few seconds.
      let alive = true;
      for (let i = 0; i < 50 && alive; i++) {
        const { stdout } = await run('ps', ['-eo', 'args']);
        alive = stdout.split('\n').some((l) => l.includes('sleep 317'));
        if (alive) await new Promise((r) => setTimeout(r, 200));
      }
      assert.equal(alive, false, 'sleep 317 still running on the host');
    } finally {
      await ctx.cleanup();
    }
  });

  test('a slow consumer slows the export instead of buffering it', async () => {
    const ctx = await makeContext({
      busybox,
      Dockerfile: `FROM scratch AS b\nCOPY busybox /bin/busybox\n${RUN('dd if=/dev/zero of=/big bs=1M count=64 2>/dev/null')}\nFROM scratch\nCOPY --from=b /big /big\n`,
    });
    try {
      let received = 0;
      let peakExternal = 0;
      const slow = new Writable({
        highWaterMark: 64 * 1024,
        write(chunk: Buffer, _e, cb) {
          received += chunk.length;
          peakExternal = Math.max(peakExternal, process.memoryUsage().arrayBuffers);
          setTimeout(cb, 2);
        },
      });
      await client.solve({ ...dockerfileSolve(ctx.dir), exports: [{ type: 'tar', output: slow }] });
      assert.ok(received > 64 * 1024 * 1024);
      // 64 MiB went through; with backpressure far less than that is ever held at once.
      assert.ok(peakExternal < 48 * 1024 * 1024, `peak arrayBuffers ${peakExternal}`);
    } finally {
      await ctx.cleanup();
    }
  });

  test('bkctl command takes buildctl flags and exports a tar', async () => {
    const ctx = await makeContext({ Dockerfile: 'FROM scratch\nCOPY a /a\n', a: 'a' });
    const dest = path.join(os.tmpdir(), `bkctl-${process.pid}.tar`);
    try {
      const bin = path.resolve(import.meta.dirname, '../bin/bkctl.js');
      const { stderr } = await run(process.execPath, [
        bin,
        '--addr',
        `docker://${socket}`,
        'build',
        '--frontend',
        'dockerfile.v0',
        '--local',
        `context=${ctx.dir}`,
        '--local',
        `dockerfile=${ctx.dir}`,
        '--opt',
        'force-network-mode=none',
        '--output',
        `type=tar,dest=${dest}`,
        '--progress',
        'plain',
      ]);
      assert.match(stderr, /#\d+ /);
      assert.equal((await fs.readFile(dest)).subarray(0, 1).toString(), 'a');
      // `debug workers` lists each worker's platforms as buildctl does, variants included.
      const { stdout } = await run(process.execPath, [
        bin,
        '--addr',
        `docker://${socket}`,
        'debug',
        'workers',
      ]);
      const expected = (await client.listWorkers()).map(
        (w) =>
          `${w.id}\t${w.platforms.map((p) => [p.os, p.architecture, p.variant].filter(Boolean).join('/')).join(',')}`,
      );
      assert.deepEqual(stdout.trim().split('\n'), expected);
      const bad = await run(process.execPath, [
        bin,
        '--addr',
        'unix:///nonexistent.sock',
        'debug',
        'workers',
      ]).catch((e: { code: number; stderr: string }) => e);
      assert.equal((bad as { code: number }).code, 1);
      assert.match((bad as { stderr: string }).stderr, /does not exist/);
    } finally {
      await ctx.cleanup();
      await fs.rm(dest, { force: true });
    }
  });
});

describe('connection errors', () => {
  test('a missing unix socket fails at once and says what to check', async () => {
    const t = Date.now();
    await assert.rejects(connect('unix:///tmp/definitely-not-buildkitd.sock'), (err: Error) => {
      assert.ok(err instanceof BuildkitConnectionError);
      assert.match(err.message, /does not exist/);
      assert.match(err.message, /buildkitd is running/);
      return true;
    });
    assert.ok(Date.now() - t < 1000);
  });

  test('a closed tcp port fails within the timeout', async () => {
    const t = Date.now();
    await assert.rejects(connect('tcp://127.0.0.1:1', { timeoutMs: 1500 }), BuildkitConnectionError);
    assert.ok(Date.now() - t < 3000);
  });

  test('a docker socket that is not a socket fails clearly', async () => {
    await assert.rejects(connect('docker:///etc/hostname'), /not a socket/);
  });

  test('bad addresses are rejected before dialling', async () => {
    await assert.rejects(connect('ftp://x'), /unsupported BuildKit address scheme/);
    await assert.rejects(connect('tcp://host'), /expected tcp:\/\/host:port/);
  });
});
