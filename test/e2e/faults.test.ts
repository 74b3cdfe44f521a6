// Fault tolerance end to end, everything real: the API in this process, workers as separate
// `node apps/worker/dist/main.js` processes, real PostgreSQL, Redis, Docker daemons and s3rver.
//   1. two worker processes share two builders: 20 concurrent builds all succeed on both daemons;
//   2. a builder dies mid-build: the build is retried on the other builder and succeeds;
//   3. Redis restarts (without persistence) with builds queued: the reconciler re-enqueues them;
//   4. S3 storage: a > 20 MiB artifact goes through a multipart upload and downloads exactly.
import assert from 'node:assert/strict';
import { type ChildProcess, execFile, spawn } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import fs from 'node:fs/promises';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import { after, describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { bootstrapProject, buildApp, createApiDeps } from '@kiln/api';
import { loadConfig, QUEUE_BUILDS } from '@kiln/core';
import { Redis } from 'ioredis';
import pg from 'pg';
import { busyboxPath, makeContext } from '../../packages/buildkit-client/test-support/context.js';
import { readTarEntries } from '../../packages/buildkit-client/test-support/tar-entries.js';
import { startS3rver } from '../../packages/core/test-support/s3rver.js';
import {
  createTestDatabase,
  freePort,
  type TestDatabase,
  testRedisUrl,
} from '../../packages/core/test-support/services.js';

const SOCK1 = process.env.KILN_TEST_DOCKER_SOCK;
const SOCK2 = process.env.KILN_TEST_DOCKER_SOCK_2;
if (!SOCK1 || !SOCK2) {
  throw new Error('KILN_TEST_DOCKER_SOCK(_2) are not set: run through `npm test`');
}
const D1 = `docker://${SOCK1}`;
const D2 = `docker://${SOCK2}`;

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const WORKER_MAIN = path.join(ROOT, 'apps/worker/dist/main.js');
const MiB = 1024 * 1024;

const RUN = (script: string) => `RUN ["/bin/busybox", "sh", "-c", ${JSON.stringify(script)}]`;
/** Two stages: the artifact holds only /out (small downloads). */
const RESULT_DOCKERFILE = [
  'FROM scratch AS b',
  'COPY busybox /bin/busybox',
  'ARG N=0',
  RUN('/bin/busybox mkdir -p /out && echo built-$N > /out/result.txt'),
  'FROM scratch',
  'COPY --from=b /out /out',
  '',
].join('\n');

interface BuildJson {
  id: string;
  status: string;
  attempts: number;
  builder: string | null;
  error?: { code: string; message: string };
  artifact?: { url: string; size: number; digest: string; filename: string };
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const sha256 = (b: Uint8Array | string) => createHash('sha256').update(b).digest('hex');
const secs = (ms: number) => `${(ms / 1000).toFixed(1)} s`;
const log = (msg: string) => console.log(`  [faults] ${msg}`);

/** Runs `fn` once, however often it is called (cleanups may be called from finally and after()). */
function once(fn: () => Promise<void>): () => Promise<void> {
  let p: Promise<void> | undefined;
  return () => {
    p ??= fn();
    return p;
  };
}

/** Safety net for after(): every cleanup registered here runs, newest first, even if a test forgot. */
const cleanups: Array<() => Promise<void>> = [];
const children = new Set<ChildProcess>();

after(async () => {
  for (const child of children) {
    if (child.exitCode === null && child.signalCode === null && child.pid) {
      console.log(`  [faults] after(): killing leftover worker process ${child.pid}`);
      child.kill('SIGKILL');
    }
  }
  for (const c of cleanups.reverse()) await c().catch((err: unknown) => console.error('cleanup:', err));
});

function bash(script: string, ...args: string[]): Promise<string> {
  return new Promise((resolve, reject) => {
    execFile(
      'bash',
      ['-c', script, 'bash', ...args],
      { cwd: ROOT, timeout: 180_000 },
      (err, stdout, stderr) => {
        if (err) reject(new Error(`bash -c '${script}' ${args.join(' ')}: ${err.message}\n${stderr}`));
        else resolve(stdout);
      },
    );
  });
}

async function tempDir(prefix: string): Promise<{ dir: string; remove: () => Promise<void> }> {
  const dir = await fs.mkdtemp(prefix);
  const remove = once(async () => {
    await bash('rm -rf --one-file-system "$1"', dir);
  });
  cleanups.push(remove);
  return { dir, remove };
}

// ---------------------------------------------------------------------------------------------
// Services

/** A private dockerd of our own (scripts/lib/dockerd.sh) in a short /tmp directory. */
async function startDockerd() {
  const { dir, remove } = await tempDir('/tmp/kf-');
  const stop = once(async () => {
    await bash('source scripts/lib/dockerd.sh && kiln_dockerd_stop "$1"', dir);
  });
  const cleanup = once(async () => {
    await stop().catch((err: unknown) => console.error('stopping dockerd:', err));
    await remove();
  });
  cleanups.push(cleanup);
  try {
    await bash('source scripts/lib/dockerd.sh && kiln_dockerd_start "$1"', dir);
  } catch (err) {
    await cleanup();
    throw err;
  }
  return { dir, sock: `${dir}/docker.sock`, address: `docker://${dir}/docker.sock`, stop, cleanup };
}

/** A private redis-server (scripts/lib/redis.sh) without persistence: a restart loses everything. */
async function startRedis() {
  const { dir, remove } = await tempDir('/tmp/kr-');
  const port = await freePort();
  const start = () => bash('source scripts/lib/redis.sh && kiln_redis_start "$1" "$2"', dir, String(port));
  const stop = () => bash('source scripts/lib/redis.sh && kiln_redis_stop "$1"', dir);
  const cleanup = once(async () => {
    await stop().catch((err: unknown) => console.error('stopping redis:', err));
    await remove();
  });
  cleanups.push(cleanup);
  try {
    await start();
  } catch (err) {
    await cleanup();
    throw err;
  }
  return { url: `redis://127.0.0.1:${port}`, start, stop, cleanup };
}

/** Only what a worker needs from our environment; every Kiln variable comes from `env`. */
function childEnv(env: Record<string, string>): NodeJS.ProcessEnv {
  const base: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) {
    if (/^(KILN_|AWS_|DATABASE_URL$|REDIS_URL$|BUILDKIT_HOST$)/.test(k)) continue;
    base[k] = v;
  }
  return { ...base, ...env };
}

interface WorkerProcess {
  name: string;
  pid: number;
  output(): string;
  /** SIGTERM, then waits for the exit (SIGKILL after `timeoutMs`); the exit code (or signal). */
  stop(timeoutMs?: number): Promise<number | string | null>;
}

/** `node apps/worker/dist/main.js` as a child process. */
function spawnWorker(name: string, env: Record<string, string>): WorkerProcess {
  const proc = spawn(process.execPath, [WORKER_MAIN], {
    cwd: ROOT,
    env: childEnv(env),
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  children.add(proc);
  let out = '';
  const add = (chunk: Buffer) => {
    out += chunk.toString();
    if (out.length > 200_000) out = out.slice(-100_000);
  };
  proc.stdout?.on('data', add);
  proc.stderr?.on('data', add);
  const exited = new Promise<number | string | null>((resolve) => {
    proc.on('exit', (code, signal) => resolve(code ?? signal));
  });
  proc.on('error', (err) => add(Buffer.from(`spawn error: ${err.message}\n`)));
  const stop = async (timeoutMs = 30_000) => {
    if (proc.exitCode === null && proc.signalCode === null) proc.kill('SIGTERM');
    let timer: NodeJS.Timeout | undefined;
    const result = await Promise.race([
      exited,
      new Promise<'timeout'>((r) => {
        timer = setTimeout(() => r('timeout'), timeoutMs);
      }),
    ]);
    clearTimeout(timer);
    if (result === 'timeout') {
      proc.kill('SIGKILL');
      await exited;
      return 'killed after SIGTERM timeout';
    }
    return result;
  };
  cleanups.push(once(async () => void (await stop(5_000))));
  return { name, pid: proc.pid ?? -1, output: () => out, stop };
}

/** The `msg` of each JSON log line a worker wrote, counted ("builder is unhealthy ×2"). */
function summarizeLog(out: string): string {
  const counts = new Map<string, number>();
  let other = 0;
  for (const line of out.split('\n')) {
    if (!line.trim()) continue;
    let msg: string | undefined;
    try {
      msg = (JSON.parse(line) as { msg?: string }).msg;
    } catch {}
    if (msg === undefined) other++;
    else counts.set(msg, (counts.get(msg) ?? 0) + 1);
  }
  const text = [...counts].map(([m, n]) => (n > 1 ? `${m} ×${n}` : m)).join('; ') || '(none)';
  return other > 0 ? `${text} (+${other} non-JSON stderr lines, e.g. Node/AWS SDK warnings)` : text;
}

/** The API in this process (the one createApiDeps/buildApp the binary uses) plus a client for it. */
async function startApi(env: Record<string, string>, project: string) {
  const port = await freePort();
  const base = `http://127.0.0.1:${port}`;
  const config = loadConfig({
    ...env,
    KILN_PORT: String(port),
    KILN_PUBLIC_URL: base,
    KILN_LOG_LEVEL: 'silent',
  });
  const deps = await createApiDeps(config);
  const app = await buildApp(deps);
  const close = once(async () => {
    await app.close();
    await deps.close();
  });
  cleanups.push(close);
  await app.listen({ port, host: '127.0.0.1' });
  const token = await bootstrapProject(config.databaseUrl, project);

  const api = (p: string, init: RequestInit = {}) => {
    const headers = new Headers(init.headers);
    headers.set('authorization', `Bearer ${token}`);
    return fetch(`${base}${p}`, { ...init, headers, redirect: 'manual' });
  };
  const submit = async (contextTgz: Buffer, query: string): Promise<BuildJson> => {
    const res = await api(`/v1/builds?${query}`, {
      method: 'POST',
      body: contextTgz,
      headers: { 'content-type': 'application/gzip' },
    });
    assert.equal(res.status, 202, await res.clone().text());
    return (await res.json()) as BuildJson;
  };
  const get = async (id: string): Promise<BuildJson> => {
    const res = await api(`/v1/builds/${id}`);
    assert.equal(res.status, 200, await res.clone().text());
    return (await res.json()) as BuildJson;
  };
  const waitFor = async (id: string, statuses: string[], timeoutMs: number): Promise<BuildJson> => {
    const end = Date.now() + timeoutMs;
    for (;;) {
      const b = await get(id);
      if (statuses.includes(b.status)) return b;
      if (Date.now() > end) {
        throw new Error(`build ${id} still ${b.status} after ${secs(timeoutMs)}: ${JSON.stringify(b)}`);
      }
      await sleep(150);
    }
  };
  const logs = async (id: string) => (await api(`/v1/builds/${id}/logs`)).text();
  return { base, config, close, api, submit, get, waitFor, logs };
}

/** Per-test database, data directory and worker environment. */
async function serviceEnv(redisUrl: string, extra: Record<string, string> = {}) {
  const db: TestDatabase = await createTestDatabase();
  cleanups.push(once(() => db.drop()));
  const data = await tempDir(path.join(os.tmpdir(), 'kiln-faults-'));
  const env: Record<string, string> = {
    DATABASE_URL: db.url,
    REDIS_URL: redisUrl,
    KILN_DATA_DIR: data.dir,
    KILN_SIGNING_KEY: 'f'.repeat(40),
    KILN_BUILDERS: `${D1}=2,${D2}=2`,
    KILN_LOG_LEVEL: 'warn',
    KILN_SHUTDOWN_GRACE_SECONDS: '5',
    ...extra,
  };
  return { db, dataDir: data.dir, env };
}

async function flushRedis(url: string): Promise<void> {
  const r = new Redis(url);
  try {
    await r.flushdb();
  } finally {
    r.disconnect();
  }
}

async function pgQuery<T>(url: string, sql: string, params: unknown[]): Promise<T[]> {
  const c = new pg.Client({ connectionString: url });
  await c.connect();
  try {
    return (await c.query(sql, params)).rows as T[];
  } finally {
    await c.end();
  }
}

const tgz = (dir: string) =>
  new Promise<Buffer>((resolve, reject) => {
    execFile(
      'tar',
      ['-C', dir, '-czf', '-', '.'],
      { encoding: 'buffer', maxBuffer: 64 * MiB },
      (err, stdout) => (err ? reject(err) : resolve(stdout)),
    );
  });

async function download(url: string): Promise<Buffer> {
  const res = await fetch(url);
  assert.equal(res.status, 200, `GET ${url}: ${res.status}`);
  return Buffer.from(await res.arrayBuffer());
}

/** Downloads an artifact and checks size, digest and that it is a tar holding `file` = `content`. */
async function checkArtifact(b: BuildJson, file: string, content?: string): Promise<Buffer> {
  assert.ok(b.artifact, `build ${b.id} has no artifact`);
  const bytes = await download(b.artifact.url);
  assert.equal(bytes.length, b.artifact.size, `size of ${b.id}`);
  assert.equal(`sha256:${sha256(bytes)}`, b.artifact.digest, `digest of ${b.id}`);
  const entries = await readTarEntries(bytes);
  const entry = entries.find((e) => e.name === file);
  assert.ok(entry, `${file} not in the artifact of ${b.id}: ${entries.map((e) => e.name).join(', ')}`);
  if (content !== undefined) assert.equal(entry.sha256, sha256(content), `${file} of ${b.id}`);
  return bytes;
}

function withOutputOnFailure<T>(workers: WorkerProcess[], fn: () => Promise<T>): Promise<T> {
  return fn().catch((err: unknown) => {
    for (const w of workers) {
      console.error(`---- output of worker ${w.name} (pid ${w.pid}), last 4000 chars ----`);
      console.error(w.output().slice(-4000));
    }
    throw err;
  });
}

// ---------------------------------------------------------------------------------------------

describe('Kiln under faults (worker processes, real daemons)', { concurrency: false }, () => {
  /** The plain (stored) log of the build retried after its builder died. */
  let retriedBuildLog: string | undefined;

  test('two worker processes, two builders: 20 concurrent builds all succeed on both daemons', {
    timeout: 120_000,
  }, async () => {
    const redisUrl = testRedisUrl();
    await flushRedis(redisUrl);
    const { env } = await serviceEnv(redisUrl);
    const api = await startApi(env, 'faults-many');
    const workers = [spawnWorker('w1', env), spawnWorker('w2', env)];
    const ctx = await makeContext({
      busybox: { content: await fs.readFile(busyboxPath()), mode: 0o755 },
      Dockerfile: RESULT_DOCKERFILE,
    });
    try {
      await withOutputOnFailure(workers, async () => {
        const context = await tgz(ctx.dir);
        const t0 = Date.now();
        const submitted = await Promise.all(
          Array.from({ length: 20 }, (_, i) =>
            api.submit(context, `output=type=tar,dest=r${i}.tar&network=none&build-arg=N=${i}`),
          ),
        );
        const tSubmitted = Date.now() - t0;
        assert.equal(new Set(submitted.map((b) => b.id)).size, 20);
        const done = await Promise.all(
          submitted.map((b) => api.waitFor(b.id, ['succeeded', 'failed', 'canceled'], 100_000)),
        );
        const tDone = Date.now() - t0;
        for (const b of done) assert.equal(b.status, 'succeeded', `${b.id}: ${JSON.stringify(b.error)}`);
        const perBuilder = new Map<string, number>();
        for (const b of done)
          perBuilder.set(b.builder ?? 'null', (perBuilder.get(b.builder ?? 'null') ?? 0) + 1);
        assert.deepEqual([...perBuilder.keys()].sort(), [D1, D2].sort(), 'both daemons were used');
        for (const b of done) assert.equal(b.attempts, 1, `${b.id} took ${b.attempts} attempts`);

        await Promise.all(done.map((b, i) => checkArtifact(b, 'out/result.txt', `built-${i}\n`)));
        log(
          `20 builds: submitted in ${secs(tSubmitted)}, all succeeded after ${secs(tDone)}; ` +
            `per builder: ${[...perBuilder].map(([a, n]) => `${a === D1 ? 'SOCK1' : 'SOCK2'}=${n}`).join(', ')}`,
        );
        const exits = await Promise.all(workers.map((w) => w.stop()));
        assert.deepEqual(exits, [0, 0], 'workers exit 0 on SIGTERM');
        for (const w of workers) log(`worker ${w.name} warnings: ${summarizeLog(w.output())}`);
      });
    } finally {
      await Promise.all(workers.map((w) => w.stop(10_000)));
      await ctx.cleanup();
      await api.close();
    }
  });

  test('a builder killed mid-build: retried on the other builder, succeeds with attempts = 2', {
    timeout: 150_000,
  }, async () => {
    const t0 = Date.now();
    const doomed = await startDockerd();
    log(`third dockerd up in ${secs(Date.now() - t0)}: ${doomed.sock}`);
    const workers: WorkerProcess[] = [];
    let api: Awaited<ReturnType<typeof startApi>> | undefined;
    const marker = `kiln-fault-${randomBytes(4).toString('hex')}`;
    const ctx = await makeContext({
      busybox: { content: await fs.readFile(busyboxPath()), mode: 0o755 },
      Dockerfile: [
        'FROM scratch AS b',
        'COPY busybox /bin/busybox',
        RUN(
          `echo ${marker} start; /bin/busybox sleep 5; /bin/busybox mkdir -p /out; echo slept > /out/slept.txt`,
        ),
        'FROM scratch',
        'COPY --from=b /out /out',
        '',
      ].join('\n'),
    });
    try {
      const redisUrl = testRedisUrl();
      await flushRedis(redisUrl);
      const { env } = await serviceEnv(redisUrl, {
        // Ours first: with equal load the configuration order decides.
        KILN_BUILDERS: `${doomed.address}=2,${D1}=2`,
      });
      api = await startApi(env, 'faults-killed');
      workers.push(spawnWorker('w', env));
      const a = api;
      await withOutputOnFailure(workers, async () => {
        const b = await a.submit(await tgz(ctx.dir), 'output=type=tar,dest=s.tar&network=none&noCache=true');
        const tSubmit = Date.now();
        const running = await a.waitFor(b.id, ['running', 'succeeded', 'failed'], 60_000);
        assert.equal(running.status, 'running');
        assert.equal(running.builder, doomed.address, 'the build runs on the preferred (doomed) builder');
        // Mid-build: the RUN step's shell is alive.
        const runStarted = async () =>
          (
            await new Promise<string>((resolve) =>
              execFile('ps', ['-eo', 'args'], (_e, out) => resolve(String(out))),
            )
          ).includes(marker);
        for (let i = 0; i < 100 && !(await runStarted()); i++) await sleep(100);
        assert.ok(await runStarted(), 'the RUN step started');
        const tKill = Date.now();
        await doomed.stop();
        const tStopped = Date.now();
        const done = await a.waitFor(b.id, ['succeeded', 'failed', 'canceled'], 90_000);
        const tDone = Date.now();
        assert.equal(done.status, 'succeeded', JSON.stringify(done.error));
        assert.equal(done.attempts, 2);
        assert.equal(done.builder, D1);
        await checkArtifact(done, 'out/slept.txt', 'slept\n');
        // The live log (SSE, from the Redis stream) shows both attempts and why the first ended.
        const sse = await a.api(`/v1/builds/${b.id}/logs`, { headers: { accept: 'text/event-stream' } });
        const events = await sse.text();
        assert.ok(events.includes(`attempt 1 on ${doomed.address}`), events);
        assert.ok(events.includes('attempt failed'), events);
        assert.ok(events.includes(`attempt 2 on ${D1}`), events);
        assert.match(events, /event: end\ndata: succeeded\n\n$/);
        // The stored plain log keeps every attempt (checked by the next test).
        retriedBuildLog = await a.logs(b.id);
        assert.ok(retriedBuildLog.includes(`attempt 2 on ${D1}`), retriedBuildLog);
        const attempts = await pgQuery<{
          number: number;
          builder: string;
          outcome: string;
          errorCode: string;
        }>(
          env.DATABASE_URL as string,
          'SELECT number, builder, outcome, "errorCode" FROM "BuildAttempt" WHERE "buildId" = $1 ORDER BY number',
          [b.id],
        );
        assert.deepEqual(
          attempts.map((r) => [r.number, r.builder, r.outcome]),
          [
            [1, doomed.address, 'failed'],
            [2, D1, 'succeeded'],
          ],
        );
        log(
          `running on the doomed dockerd ${secs(tKill - tSubmit)} after submit; kiln_dockerd_stop took ${secs(tStopped - tKill)}; ` +
            `succeeded on SOCK1 ${secs(tDone - tKill)} after the kill (attempt 1: ${attempts[0]?.errorCode})`,
        );
        const exit = await workers[0]?.stop();
        assert.equal(exit, 0);
        log(`worker warnings: ${summarizeLog(workers[0]?.output() ?? '')}`);
      });
    } finally {
      await Promise.all(workers.map((w) => w.stop(10_000)));
      await ctx.cleanup();
      await api?.close();
      await doomed.cleanup();
    }
  });

  test('the stored log of a retried build holds every attempt, like the live log', {}, () => {
    assert.ok(retriedBuildLog !== undefined, 'the builder-killed test ran');
    assert.ok(retriedBuildLog.includes('attempt 1 on docker://'), retriedBuildLog);
    assert.ok(retriedBuildLog.includes('attempt failed'), retriedBuildLog);
  });

  test('Redis restarted (data lost) with 5 builds queued: the reconciler re-enqueues them, each runs once', {
    timeout: 150_000,
  }, async () => {
    const redis = await startRedis();
    const workers: WorkerProcess[] = [];
    let api: Awaited<ReturnType<typeof startApi>> | undefined;
    const ctx = await makeContext({
      busybox: { content: await fs.readFile(busyboxPath()), mode: 0o755 },
      Dockerfile: RESULT_DOCKERFILE,
    });
    const probe = new Redis(redis.url, { maxRetriesPerRequest: 1 });
    probe.on('error', () => {});
    try {
      const { env, dataDir } = await serviceEnv(redis.url, { KILN_RECONCILE_INTERVAL_SECONDS: '2' });
      api = await startApi(env, 'faults-redis');
      const a = api;
      const context = await tgz(ctx.dir);
      // A worker proves the pipeline works on this Redis, then stops.
      const first = spawnWorker('w0', env);
      workers.push(first);
      await withOutputOnFailure(workers, async () => {
        const warm = await a.submit(context, 'output=type=tar,dest=warm.tar&network=none&build-arg=N=warm');
        const warmDone = await a.waitFor(warm.id, ['succeeded', 'failed'], 60_000);
        assert.equal(warmDone.status, 'succeeded', JSON.stringify(warmDone.error));
        assert.equal(await first.stop(), 0, 'worker exits 0 on SIGTERM');

        // No worker: 5 builds stay queued, their jobs in Redis.
        const queued = await Promise.all(
          Array.from({ length: 5 }, (_, i) =>
            a.submit(context, `output=type=tar,dest=q${i}.tar&network=none&build-arg=N=${i}`),
          ),
        );
        for (const b of queued) assert.equal(b.status, 'queued');
        for (const b of queued) {
          assert.equal(await probe.exists(`bull:${QUEUE_BUILDS}:${b.id}`), 1, `job of ${b.id} in Redis`);
        }
        const tRestart = Date.now();
        await redis.stop();
        await redis.start();
        assert.equal(await probe.dbsize(), 0, 'the restarted Redis is empty');
        log(`redis restarted in ${secs(Date.now() - tRestart)}; its data is gone`);
        for (const b of queued) assert.equal((await a.get(b.id)).status, 'queued');

        const t0 = Date.now();
        const second = spawnWorker('w1', env);
        workers.push(second);
        const done = await Promise.all(
          queued.map((b) => a.waitFor(b.id, ['succeeded', 'failed', 'canceled'], 90_000)),
        );
        const tDone = Date.now() - t0;
        for (const [i, b] of done.entries()) {
          assert.equal(b.status, 'succeeded', `${b.id}: ${JSON.stringify(b.error)}`);
          assert.equal(b.attempts, 1, `${b.id} ran ${b.attempts} times`);
          await checkArtifact(b, 'out/result.txt', `built-${i}\n`);
          const files = await fs.readdir(path.join(dataDir, 'objects', 'artifacts', b.id));
          assert.deepEqual(files, [`q${i}.tar`], `one artifact for ${b.id}`);
          // The live log stream holds every attempt's output (the stored log only the last one).
          const sse = await a.api(`/v1/builds/${b.id}/logs`, { headers: { accept: 'text/event-stream' } });
          const events = await sse.text();
          assert.equal((events.match(/#0 kiln: attempt \d+ on/g) ?? []).length, 1, events);
          assert.match(events, /event: end\ndata: succeeded\n\n$/);
        }
        const rows = await pgQuery<{ buildId: string; n: string }>(
          env.DATABASE_URL as string,
          'SELECT "buildId", count(*) AS n FROM "BuildAttempt" WHERE "buildId" = ANY($1) GROUP BY "buildId"',
          [queued.map((b) => b.id)],
        );
        assert.equal(rows.length, 5);
        for (const r of rows) assert.equal(Number(r.n), 1, `attempt rows of ${r.buildId}`);
        log(
          `5 lost jobs: all succeeded ${secs(tDone)} after the worker started (reconcile interval 2 s, ` +
            `queued grace 5 s); builders: ${[...new Set(done.map((b) => b.builder))].join(', ')}`,
        );
        assert.equal(await second.stop(), 0);
        log(`worker w1 warnings: ${summarizeLog(second.output())}`);
      });
    } finally {
      probe.disconnect();
      await Promise.all(workers.map((w) => w.stop(10_000)));
      await ctx.cleanup();
      await api?.close();
      await redis.cleanup();
    }
  });

  test('S3 storage (s3rver): a 24 MiB artifact is uploaded in 8 MiB parts and downloads exactly', {
    timeout: 150_000,
  }, async () => {
    const s3 = await startS3rver();
    cleanups.push(once(() => s3.stop()));
    // A transparent proxy in front of s3rver for the worker only, to see each UploadPart request.
    const parts: Array<{ key: string; part: number; bytes: number; status: number }> = [];
    const completes: string[] = [];
    const target = new URL(s3.endpoint);
    const proxy = http.createServer((req, res) => {
      const url = new URL(req.url ?? '/', 'http://proxy');
      const key = decodeURIComponent(url.pathname.split('/').slice(2).join('/'));
      const partNumber = url.searchParams.get('partNumber');
      const isPart = req.method === 'PUT' && partNumber !== null && url.searchParams.has('uploadId');
      if (req.method === 'POST' && url.searchParams.has('uploadId')) completes.push(key);
      let bytes = 0;
      req.on('data', (c: Buffer) => {
        bytes += c.length;
      });
      const headers = { ...req.headers };
      delete headers.expect;
      const up = http.request(
        { host: target.hostname, port: target.port, method: req.method, path: req.url, headers },
        (upRes) => {
          if (isPart) parts.push({ key, part: Number(partNumber), bytes, status: upRes.statusCode ?? 0 });
          res.writeHead(upRes.statusCode ?? 502, upRes.headers);
          upRes.pipe(res);
        },
      );
      up.on('error', (err) => res.destroy(err));
      req.pipe(up);
    });
    await new Promise<void>((r) => proxy.listen(0, '127.0.0.1', r));
    const closeProxy = once(
      () =>
        new Promise<void>((r) => {
          proxy.closeAllConnections();
          proxy.close(() => r());
        }),
    );
    cleanups.push(closeProxy);
    const proxyEndpoint = `http://127.0.0.1:${(proxy.address() as { port: number }).port}`;

    const workers: WorkerProcess[] = [];
    let api: Awaited<ReturnType<typeof startApi>> | undefined;
    const ctx = await makeContext({
      busybox: { content: await fs.readFile(busyboxPath()), mode: 0o755 },
      Dockerfile: [
        'FROM scratch AS b',
        'COPY busybox /bin/busybox',
        RUN('/bin/busybox dd if=/dev/urandom of=/big bs=1M count=24'),
        'FROM scratch',
        'COPY --from=b /big /big',
        '',
      ].join('\n'),
    });
    try {
      const redisUrl = testRedisUrl();
      await flushRedis(redisUrl);
      const s3Env = {
        KILN_S3_BUCKET: s3.bucket,
        KILN_S3_ENDPOINT: s3.endpoint,
        AWS_ACCESS_KEY_ID: 'S3RVER',
        AWS_SECRET_ACCESS_KEY: 'S3RVER',
      };
      const { env } = await serviceEnv(redisUrl, s3Env);
      api = await startApi(env, 'faults-s3');
      assert.equal(api.config.storage.kind, 's3');
      workers.push(spawnWorker('w', { ...env, KILN_S3_ENDPOINT: proxyEndpoint }));
      const a = api;
      await withOutputOnFailure(workers, async () => {
        const t0 = Date.now();
        const b = await a.submit(
          await tgz(ctx.dir),
          'output=type=tar,dest=big.tar&network=none&noCache=true',
        );
        const done = await a.waitFor(b.id, ['succeeded', 'failed', 'canceled'], 120_000);
        const tBuild = Date.now() - t0;
        assert.equal(done.status, 'succeeded', JSON.stringify(done.error));
        assert.ok(done.artifact);
        assert.ok(done.artifact.size > 20 * MiB, `artifact of ${done.artifact.size} bytes`);

        // An s3rver presigned URL (path style: endpoint/bucket/key?X-Amz-...).
        const url = new URL(done.artifact.url);
        assert.equal(url.origin, s3.endpoint);
        assert.equal(url.pathname, `/${s3.bucket}/artifacts/${b.id}/big.tar`);
        for (const p of ['X-Amz-Signature', 'X-Amz-Expires', 'X-Amz-Credential']) {
          assert.ok(url.searchParams.has(p), `${p} in ${url}`);
        }
        const t1 = Date.now();
        const bytes = await checkArtifact(done, 'big');
        const tDownload = Date.now() - t1;
        const big = (await readTarEntries(bytes)).find((e) => e.name === 'big');
        assert.equal(big?.size, 24 * MiB);

        // lib-storage multipart: ≥ 3 full 8 MiB parts of this artifact, completed once.
        const ours = parts
          .filter((p) => p.key === `artifacts/${b.id}/big.tar`)
          .sort((x, y) => x.part - y.part);
        const full = ours.filter((p) => p.bytes === 8 * MiB);
        assert.ok(full.length >= 3, `parts: ${JSON.stringify(ours)}`);
        assert.ok(
          ours.every((p) => p.status === 200),
          `parts: ${JSON.stringify(ours)}`,
        );
        assert.equal(
          ours.reduce((n, p) => n + p.bytes, 0),
          done.artifact.size,
        );
        assert.deepEqual(completes.filter((k) => k === `artifacts/${b.id}/big.tar`).length, 1);
        const leftover = await fs.readdir(s3.uploadsDir).catch(() => [] as string[]);
        assert.deepEqual(leftover, [], 'no multipart upload left open in s3rver');
        log(
          `S3: ${(done.artifact.size / MiB).toFixed(1)} MiB artifact built and stored in ${secs(tBuild)} ` +
            `as ${ours.length} parts [${ours.map((p) => (p.bytes / MiB).toFixed(2)).join(', ')}] MiB; ` +
            `presigned download + sha256 in ${secs(tDownload)}`,
        );
        assert.equal(await workers[0]?.stop(), 0);
        log(`worker warnings: ${summarizeLog(workers[0]?.output() ?? '')}`);
      });
    } finally {
      await Promise.all(workers.map((w) => w.stop(10_000)));
      await ctx.cleanup();
      await api?.close();
      await closeProxy();
      await s3.stop();
    }
  });
});
