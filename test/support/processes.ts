// Kiln as real processes for fault tests: private services (dockerd, Redis, PostgreSQL) a test
// may stop and restart, workers and APIs as `scripts/run-app.sh` child processes (or the
// API in this process), and a small HTTP client for the API. Everything started here is also
// registered for cleanup in an after() hook of the test file, newest first.
import assert from 'node:assert/strict';
import { type ChildProcess, execFile, spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { after } from 'node:test';
import { fileURLToPath } from 'node:url';
import { bootstrapProject, buildApp, createApiDeps } from '@kiln/api';
import { loadConfig, logStreamKey } from '@kiln/core';
import { Redis } from 'ioredis';
import pg from 'pg';
import {
  busyboxPath,
  type ContextFile,
  makeContext,
} from '../../packages/buildkit-client/test-support/context.js';
import { readTarEntries } from '../../packages/buildkit-client/test-support/tar-entries.js';
import {
  createTestDatabase,
  freePort,
  type TestDatabase,
  testRedisUrl,
} from '../../packages/core/test-support/services.js';

export const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
/** How every launcher starts an API or worker process (memory settings included). */
const RUN_APP = path.join(ROOT, 'scripts/run-app.sh');
export const MiB = 1024 * 1024;

/** The two dockerds `npm test` starts, as builder addresses. */
export function testBuilders(): { D1: string; D2: string } {
  const s1 = process.env.KILN_TEST_DOCKER_SOCK;
  const s2 = process.env.KILN_TEST_DOCKER_SOCK_2;
  if (!s1 || !s2) throw new Error('KILN_TEST_DOCKER_SOCK(_2) are not set: run through `npm test`');
  return { D1: `docker://${s1}`, D2: `docker://${s2}` };
}

export const RUN = (script: string) => `RUN ["/bin/busybox", "sh", "-c", ${JSON.stringify(script)}]`;
/** Two stages: busybox runs `script` (`$N` is the build-arg N, 0 by default); the artifact holds only `keep`. */
export const scriptDockerfile = (script: string, keep = '/out') =>
  [
    'FROM scratch AS b',
    'COPY busybox /bin/busybox',
    'ARG N=0',
    RUN(script),
    'FROM scratch',
    `COPY --from=b ${keep} ${keep}`,
    '',
  ].join('\n');
/** The artifact holds only /out/result.txt = `built-$N` (small downloads). */
export const RESULT_DOCKERFILE = scriptDockerfile(
  '/bin/busybox mkdir -p /out && echo built-$N > /out/result.txt',
);

/** The artifact holds only /big, 24 MiB of random bytes (S3: a multipart upload, 3 full 8 MiB parts). */
export const BIG_DOCKERFILE = scriptDockerfile(
  '/bin/busybox dd if=/dev/urandom of=/big bs=1M count=24',
  '/big',
);

/** A build context of the static busybox, `dockerfile` and `files`. */
export async function busyboxContext(dockerfile: string, files: Record<string, ContextFile> = {}) {
  return makeContext({
    busybox: { content: await fs.readFile(busyboxPath()), mode: 0o755 },
    Dockerfile: dockerfile,
    ...files,
  });
}

export interface BuildJson {
  id: string;
  status: string;
  attempts: number;
  builder: string | null;
  error?: { code: string; message: string };
  artifact?: { url: string; size: number; digest: string; filename: string };
}

export const FINAL = ['succeeded', 'failed', 'canceled'];
export const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
export const sha256 = (b: Uint8Array | string) => createHash('sha256').update(b).digest('hex');
export const secs = (ms: number) => `${(ms / 1000).toFixed(1)} s`;
export const logger = (tag: string) => (msg: string) => console.log(`  [${tag}] ${msg}`);

/** Runs `fn` once, however often it is called (cleanups may be called from finally and after()). */
export function once(fn: () => Promise<void>): () => Promise<void> {
  let p: Promise<void> | undefined;
  return () => {
    p ??= fn();
    return p;
  };
}

/** Safety net for after(): every cleanup registered here runs, newest first, even if a test forgot. */
const cleanups: Array<() => Promise<void>> = [];
const children = new Set<ChildProcess>();
export const addCleanup = (fn: () => Promise<void>) => void cleanups.push(fn);

after(async () => {
  for (const child of children) {
    if (child.exitCode === null && child.signalCode === null && child.pid) {
      console.log(`  after(): killing leftover child process ${child.pid}`);
      child.kill('SIGKILL');
    }
  }
  for (const c of cleanups.reverse()) await c().catch((err: unknown) => console.error('cleanup:', err));
});

export function bash(script: string, ...args: string[]): Promise<string> {
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

export async function tempDir(prefix: string): Promise<{ dir: string; remove: () => Promise<void> }> {
  const dir = await fs.mkdtemp(prefix);
  const remove = once(async () => {
    await bash('rm -rf --one-file-system "$1"', dir);
  });
  cleanups.push(remove);
  return { dir, remove };
}

/** Every file under `dir`, relative, recursively ([] when it does not exist). */
export async function listFiles(dir: string): Promise<string[]> {
  const entries = await fs.readdir(dir, { recursive: true, withFileTypes: true }).catch(() => []);
  return entries
    .filter((e) => !e.isDirectory())
    .map((e) => path.relative(dir, path.join(e.parentPath, e.name)))
    .sort();
}

/** True when some process's command line contains `marker` (a RUN step of a build is alive). */
export async function processRuns(marker: string): Promise<boolean> {
  const out = await new Promise<string>((resolve) =>
    execFile('ps', ['-eo', 'args'], (_e, stdout) => resolve(String(stdout))),
  );
  return out.split('\n').some((line) => line.includes(marker) && !line.includes('ps -eo'));
}

export async function waitUntil(what: string, check: () => Promise<boolean>, timeoutMs: number) {
  const end = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > end) throw new Error(`${what}: not after ${secs(timeoutMs)}`);
    await sleep(100);
  }
}

// ---------------------------------------------------------------------------------------------
// Services

export interface Dockerd {
  dir: string;
  sock: string;
  address: string;
  stop(): Promise<void>;
  start(): Promise<void>;
  cleanup(): Promise<void>;
}

/** Stop/start of a dockerd in `dir` (scripts/lib/dockerd.sh); the same socket after a restart. */
function dockerdIn(dir: string): Pick<Dockerd, 'dir' | 'sock' | 'address' | 'stop' | 'start'> {
  return {
    dir,
    sock: `${dir}/docker.sock`,
    address: `docker://${dir}/docker.sock`,
    stop: () => bash('source scripts/lib/dockerd.sh && kiln_dockerd_stop "$1"', dir).then(() => {}),
    start: () => bash('source scripts/lib/dockerd.sh && kiln_dockerd_start "$1"', dir).then(() => {}),
  };
}

/** A private dockerd of our own in a short /tmp directory. */
export async function startDockerd(): Promise<Dockerd> {
  const { dir, remove } = await tempDir('/tmp/kf-');
  const d = dockerdIn(dir);
  const cleanup = once(async () => {
    await d.stop().catch((err: unknown) => console.error('stopping dockerd:', err));
    await remove();
  });
  cleanups.push(cleanup);
  try {
    await d.start();
  } catch (err) {
    await cleanup();
    throw err;
  }
  return { ...d, cleanup };
}

/**
 * A private standalone buildkitd of our own (scripts/lib/buildkitd.sh), e.g. a second v0.24.0.
 * `freeze` stops the daemon (SIGSTOP: a daemon that hangs, its connections open) until `thaw`.
 */
export async function startBuildkitd(): Promise<{
  address: string;
  freeze(): Promise<void>;
  thaw(): Promise<void>;
  cleanup(): Promise<void>;
}> {
  const { dir, remove } = await tempDir('/tmp/kb-');
  const signal = async (sig: 'SIGSTOP' | 'SIGCONT'): Promise<void> => {
    process.kill(Number(await fs.readFile(path.join(dir, 'spawned/buildkitd'), 'utf8')), sig);
  };
  const cleanup = once(async () => {
    await signal('SIGCONT').catch(() => undefined);
    await bash('source scripts/lib/buildkitd.sh && kiln_buildkitd_stop "$1"', dir).catch((err: unknown) =>
      console.error('stopping buildkitd:', err),
    );
    await remove();
  });
  cleanups.push(cleanup);
  try {
    await bash('source scripts/lib/buildkitd.sh && kiln_buildkitd_start "$1"', dir);
  } catch (err) {
    await cleanup();
    throw err;
  }
  return {
    address: `unix://${dir}/buildkitd.sock`,
    freeze: () => signal('SIGSTOP'),
    thaw: () => signal('SIGCONT'),
    cleanup,
  };
}

/**
 * The second dockerd of `npm test` (KILN_TEST_DOCKERD_DIR_2), to stop and restart; cleanup()
 * makes sure it runs again for the test files after this one.
 */
export function sharedDockerd2(): Dockerd {
  const dir = process.env.KILN_TEST_DOCKERD_DIR_2;
  if (!dir) throw new Error('KILN_TEST_DOCKERD_DIR_2 is not set: run through `npm test`');
  const d = dockerdIn(dir);
  const cleanup = once(async () => {
    await bash(
      'timeout 5 docker -H "unix://$1" version >/dev/null 2>&1 || { source scripts/lib/dockerd.sh && kiln_dockerd_start "$2"; }',
      d.sock,
      dir,
    );
  });
  cleanups.push(cleanup);
  return { ...d, cleanup };
}

/**
 * A service of scripts/lib/<lib>.sh (`<prefix>_start DIR PORT [startArgs]`, `<prefix>_stop DIR`) in
 * a private directory on a free port, started now; `cleanup` stops it and removes the directory.
 */
async function startScriptService(lib: string, prefix: string, startArgs = '') {
  const { dir, remove } = await tempDir(`/tmp/k${lib[0]}-`);
  const port = await freePort();
  const start = () =>
    bash(`source scripts/lib/${lib}.sh && ${prefix}_start "$1" "$2" ${startArgs}`, dir, String(port)).then(
      () => {},
    );
  const stop = () => bash(`source scripts/lib/${lib}.sh && ${prefix}_stop "$1"`, dir).then(() => {});
  const cleanup = once(async () => {
    await stop().catch((err: unknown) => console.error(`stopping ${lib}:`, err));
    await remove();
  });
  cleanups.push(cleanup);
  try {
    await start();
  } catch (err) {
    await cleanup();
    throw err;
  }
  return { port, start, stop, cleanup };
}

/** A private redis-server without persistence: a restart loses everything. */
export async function startRedis() {
  const { port, ...rest } = await startScriptService('redis', 'kiln_redis');
  return { url: `redis://127.0.0.1:${port}`, ...rest };
}

/** A private PostgreSQL cluster (scripts/lib/postgres.sh, durable: a restart keeps the data). */
export async function startPostgres() {
  const { port, ...rest } = await startScriptService('postgres', 'kiln_pg', '--durable');
  return { url: `postgresql://postgres@127.0.0.1:${port}/kiln`, ...rest };
}

export async function flushRedis(url: string): Promise<void> {
  const r = new Redis(url);
  try {
    await r.flushdb();
  } finally {
    r.disconnect();
  }
}

export async function pgQuery<T>(url: string, sql: string, params: unknown[] = []): Promise<T[]> {
  const c = new pg.Client({ connectionString: url });
  await c.connect();
  try {
    return (await c.query(sql, params)).rows as T[];
  } finally {
    await c.end();
  }
}

// ---------------------------------------------------------------------------------------------
// Kiln processes

/** Only what a child needs from our environment; every Kiln variable comes from `env`. */
function childEnv(env: Record<string, string>): NodeJS.ProcessEnv {
  const base: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) {
    if (/^(KILN_|AWS_|DATABASE_URL$|REDIS_URL$|BUILDKIT_HOST$)/.test(k)) continue;
    base[k] = v;
  }
  return { ...base, ...env };
}

export interface KilnProcess {
  name: string;
  pid: number;
  output(): string;
  exited: Promise<number | string | null>;
  /** SIGKILL, and waits for the exit. */
  kill(): Promise<void>;
  /** SIGTERM, then waits for the exit (SIGKILL after `timeoutMs`); the exit code (or signal). */
  stop(timeoutMs?: number): Promise<number | string | null>;
}

function spawnKiln(app: 'api' | 'worker', name: string, env: Record<string, string>): KilnProcess {
  const proc = spawn(RUN_APP, [app], {
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
  const running = () => proc.exitCode === null && proc.signalCode === null;
  const stop = async (timeoutMs = 30_000) => {
    if (running()) proc.kill('SIGTERM');
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
  const kill = async () => {
    if (running()) proc.kill('SIGKILL');
    await exited;
  };
  cleanups.push(once(async () => void (await stop(5_000))));
  return { name, pid: proc.pid ?? -1, output: () => out, exited, kill, stop };
}

/** A worker (`scripts/run-app.sh worker`) as a child process. */
export const spawnWorker = (name: string, env: Record<string, string>) => spawnKiln('worker', name, env);

/** An API (`scripts/run-app.sh api`) as a child process, listening on `port`; resolves once it answers. */
export async function spawnApi(
  name: string,
  env: Record<string, string>,
  port: number,
): Promise<KilnProcess & { base: string }> {
  const base = `http://127.0.0.1:${port}`;
  const p = spawnKiln('api', name, {
    ...env,
    KILN_PORT: String(port),
    KILN_HOST: '127.0.0.1',
    KILN_PUBLIC_URL: base,
  });
  const end = Date.now() + 60_000;
  for (;;) {
    const ok = await fetch(`${base}/healthz`).then(
      () => true,
      () => false,
    );
    if (ok) break;
    const code = await Promise.race([p.exited, sleep(200).then(() => 'running' as const)]);
    if (code !== 'running') throw new Error(`API ${name} exited (${code}): ${p.output().slice(-3000)}`);
    if (Date.now() > end) throw new Error(`API ${name} did not answer within 60 s: ${p.output()}`);
  }
  return { ...p, base };
}

/** The `msg` of each JSON log line a process wrote, counted ("builder is unhealthy ×2"). */
export function summarizeLog(out: string): string {
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

export function withOutputOnFailure<T>(procs: KilnProcess[], fn: () => Promise<T>): Promise<T> {
  return fn().catch((err: unknown) => {
    for (const w of procs) {
      console.error(`---- output of ${w.name} (pid ${w.pid}), last 4000 chars ----`);
      console.error(w.output().slice(-4000));
    }
    throw err;
  });
}

/** A client of the API at `base` with a project token. */
export function apiClient(base: string, token: string) {
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
  return { base, token, api, submit, get, waitFor, logs };
}
export type ApiClient = ReturnType<typeof apiClient>;

/** The API in this process (the one createApiDeps/buildApp the binary uses) plus a client for it. */
export async function startApi(env: Record<string, string>, project: string) {
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
  return { ...apiClient(base, token), config, close };
}
export type InProcessApi = Awaited<ReturnType<typeof startApi>>;

/**
 * Per-test database (a fresh one on the shared PostgreSQL unless `databaseUrl` is given), data
 * directory and the environment of every Kiln process of the test.
 */
export async function serviceEnv(redisUrl: string, extra: Record<string, string> = {}, databaseUrl?: string) {
  let url = databaseUrl;
  if (!url) {
    const db: TestDatabase = await createTestDatabase();
    cleanups.push(once(() => db.drop()));
    url = db.url;
  }
  const data = await tempDir(path.join(os.tmpdir(), 'kiln-faults-'));
  const { D1, D2 } = testBuilders();
  const env: Record<string, string> = {
    DATABASE_URL: url,
    REDIS_URL: redisUrl,
    KILN_DATA_DIR: data.dir,
    KILN_SIGNING_KEY: 'f'.repeat(40),
    KILN_BUILDERS: `${D1}=2,${D2}=2`,
    KILN_LOG_LEVEL: 'warn',
    KILN_SHUTDOWN_GRACE_SECONDS: '5',
    ...extra,
  };
  return { dataDir: data.dir, env };
}

/** The environment that points Kiln at an s3rver (its fixed S3RVER credentials). */
export const s3rverEnv = (s3: { bucket: string; endpoint: string }) => ({
  KILN_S3_BUCKET: s3.bucket,
  KILN_S3_ENDPOINT: s3.endpoint,
  AWS_ACCESS_KEY_ID: 'S3RVER',
  AWS_SECRET_ACCESS_KEY: 'S3RVER',
  // The builders' keys for the shared cache, never Kiln's own; s3rver knows one account only.
  KILN_BUILD_CACHE_S3_ACCESS_KEY_ID: 'S3RVER',
  KILN_BUILD_CACHE_S3_SECRET_ACCESS_KEY: 'S3RVER',
});

/** What `withKiln` hands a test. */
export interface FaultKiln {
  api: InProcessApi;
  env: Record<string, string>;
  dataDir: string;
  workers: KilnProcess[];
  /** A worker process (with `env` unless another is given), stopped when the test ends. */
  spawn: (name: string, workerEnv?: Record<string, string>) => KilnProcess;
}

/**
 * One fault test's Kiln: Redis at `redisUrl` (the shared test Redis by default) flushed, its
 * environment (serviceEnv with `env`), the API in this process as `project`, and the workers `fn`
 * spawns, whose output is printed if `fn` fails. However `fn` ends, the workers and the API are
 * stopped, then `release` (the test's own resources) runs.
 */
export async function withKiln(
  opts: {
    project: string;
    env?: Record<string, string>;
    redisUrl?: string;
    databaseUrl?: string;
    release?: Array<() => unknown>;
  },
  fn: (kiln: FaultKiln) => Promise<void>,
): Promise<void> {
  const workers: KilnProcess[] = [];
  let api: InProcessApi | undefined;
  try {
    const redisUrl = opts.redisUrl ?? testRedisUrl();
    await flushRedis(redisUrl);
    const { env, dataDir } = await serviceEnv(redisUrl, opts.env, opts.databaseUrl);
    api = await startApi(env, opts.project);
    const spawn = (name: string, workerEnv = env) => {
      const w = spawnWorker(name, workerEnv);
      workers.push(w);
      return w;
    };
    const kiln = { api, env, dataDir, workers, spawn };
    await withOutputOnFailure(workers, () => fn(kiln));
  } finally {
    await Promise.all(workers.map((w) => w.stop(10_000)));
    await api?.close();
    for (const release of opts.release ?? []) await release();
  }
}

export const tgz = (dir: string) =>
  new Promise<Buffer>((resolve, reject) => {
    execFile(
      'tar',
      ['-C', dir, '-czf', '-', '.'],
      { encoding: 'buffer', maxBuffer: 64 * MiB },
      (err, stdout) => (err ? reject(err) : resolve(stdout)),
    );
  });

export async function download(url: string): Promise<Buffer> {
  const res = await fetch(url);
  assert.equal(res.status, 200, `GET ${url}: ${res.status}`);
  return Buffer.from(await res.arrayBuffer());
}

/** Downloads an artifact and checks size, digest and that it is a tar holding `file` = `content`. */
export async function checkArtifact(b: BuildJson, file: string, content?: string): Promise<Buffer> {
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

/** The `end` entries of a build's log stream: one per final state the build reached. */
export async function endsOf(redis: Redis, id: string): Promise<string[]> {
  const entries = await redis.xrange(logStreamKey(id), '-', '+');
  return entries.filter(([, f]) => f[1] === 'end').map(([, f]) => String(f[3]));
}

/** BuildAttempt rows of some builds: [buildId, number, outcome, errorCode]. */
export async function attemptsOf(databaseUrl: string, ids: string[]) {
  return pgQuery<{
    buildId: string;
    number: number;
    builder: string;
    outcome: string | null;
    errorCode: string | null;
  }>(
    databaseUrl,
    'SELECT "buildId", number, builder, outcome, "errorCode" FROM "BuildAttempt" WHERE "buildId" = ANY($1) ORDER BY "buildId", number',
    [ids],
  );
}
