// The result cache and retention through HTTP: the API and a worker (in this process) on real
// PostgreSQL, Redis, a private dockerd and local storage.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import fs from 'node:fs/promises';
import path from 'node:path';
import { Readable } from 'node:stream';
import { after, before, describe, test } from 'node:test';
import {
  builderPlatformsKey,
  contextKey,
  createPrismaClient,
  parseBuildSpec,
  QUEUE_BUILDS,
} from '@kiln/core';
import type { KilnWorker } from '@kiln/worker';
import type { Redis } from 'ioredis';
import { startTestKiln, type TestKiln } from '../../../test/support/kiln.js';
import { createBuild } from '../src/create-build.js';
import type { ApiDeps } from '../src/index.js';

const socket = process.env.KILN_TEST_DOCKER_SOCK;
if (!socket) throw new Error('KILN_TEST_DOCKER_SOCK is not set: run through `npm test`');
const BUILDER = `docker://${socket}`;

/** Two stages, no RUN: builds in well under a second on the private dockerd. */
const DOCKERFILE = 'FROM scratch AS base\nARG A=0\nCOPY a /a\nFROM base AS final\nCOPY b /b\n';

function tarOf(files: Record<string, string>): Buffer {
  const dir = execFileSync('mktemp', ['-d']).toString().trim();
  for (const [name, content] of Object.entries(files)) {
    execFileSync('sh', ['-c', 'cat > "$1"', 'sh', path.join(dir, name)], { input: content });
  }
  const tar = execFileSync('tar', ['-C', dir, '-cf', '-', '.']);
  execFileSync('rm', ['-rf', dir]);
  return tar;
}

interface BuildJson {
  id: string;
  status: string;
  cached: boolean;
  cachedFrom: string | null;
  platform: string | null;
  context: { digest: string };
  startedAt: string | null;
  finishedAt: string | null;
  error?: { code: string; message: string };
  artifact?: { url: string; size: number; digest: string; filename: string };
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)] ?? NaN;

describe('result cache and retention', () => {
  let kiln: TestKiln;
  let dataDir: string;
  let base: string;
  let token: string;
  let otherToken: string;
  let redis: Redis;
  let worker: KilnWorker;
  let apiDeps: ApiDeps;
  const ctx = tarOf({ Dockerfile: DOCKERFILE, a: 'alpha\n', b: 'beta\n' });
  const otherCtx = tarOf({ Dockerfile: DOCKERFILE, a: 'alpha\n', b: 'gamma\n' });
  const Q = 'output=type=tar,dest=app.tar&build-arg=A=1';
  /** The first build of ctx + Q, which the cache hits reuse. */
  let source: BuildJson;

  const api = (p: string, init: RequestInit & { auth?: string } = {}) => {
    const headers = new Headers(init.headers);
    headers.set('authorization', `Bearer ${init.auth ?? token}`);
    return fetch(p.startsWith('http') ? p : `${base}${p}`, { ...init, headers, redirect: 'manual' });
  };
  const post = (query: string, body: Buffer = ctx, extra: Record<string, string> = {}, auth?: string) =>
    api(`/v1/builds?${query}`, {
      method: 'POST',
      body,
      headers: { 'content-type': 'application/x-tar', ...extra },
      ...(auth ? { auth } : {}),
    });
  const get = async (id: string, auth?: string) =>
    (await (await api(`/v1/builds/${id}`, auth ? { auth } : {})).json()) as BuildJson;
  const waitFor = async (id: string, auth?: string): Promise<BuildJson> => {
    const end = Date.now() + 60_000;
    for (;;) {
      const b = await get(id, auth);
      if (!['queued', 'running'].includes(b.status)) return b;
      if (Date.now() > end) throw new Error(`build ${id} still ${b.status}`);
      await new Promise((r) => setTimeout(r, 100));
    }
  };
  const download = async (url: string) => Buffer.from(await (await fetch(url)).arrayBuffer());
  const jobExists = async (id: string) => (await redis.exists(`bull:${QUEUE_BUILDS}:${id}`)) === 1;
  /** A POST the cache must not answer: 202, queued, job enqueued. */
  const assertMiss = async (res: Response, what: string) => {
    assert.equal(res.status, 202, `${what}: ${await res.clone().text()}`);
    const b = (await res.json()) as BuildJson;
    assert.equal(b.status, 'queued', what);
    assert.equal(b.cached, false, what);
    assert.ok(await jobExists(b.id), `${what}: a job is enqueued`);
    return b;
  };

  before(async () => {
    kiln = await startTestKiln({
      worker: true,
      project: 'cache-a',
      env: { KILN_BUILDERS: BUILDER },
      // No periodic health checks: the platform test below edits what the workers published.
      workerDeps: { healthIntervalMs: 0, reconcileIntervalMs: 0, retentionIntervalMs: 0 },
    });
    ({ url: base, token, dataDir, redis, deps: apiDeps } = kiln);
    worker = kiln.worker as KilnWorker;
    otherToken = await kiln.newToken('cache-b');
  });
  after(() => kiln.stop());

  test('a first build runs and records its platform; the worker published the builder platform', async () => {
    const res = await post(Q);
    const queued = await assertMiss(res, 'first build');
    source = await waitFor(queued.id);
    assert.equal(source.status, 'succeeded', JSON.stringify(source.error));
    assert.equal(source.cached, false);
    assert.equal(source.cachedFrom, null);
    assert.match(source.platform ?? '', /^linux\/[a-z0-9_]+(\/[a-z0-9]+)?$/);
    assert.equal(await redis.hget(builderPlatformsKey(), BUILDER), source.platform);
  });

  test('the same context and spec (another dest) is answered at once: succeeded, cached, same bytes, no job', async () => {
    const waitingBefore = await redis.zcard(`bull:${QUEUE_BUILDS}:prioritized`);
    const postMs: number[] = [];
    const downloadableMs: number[] = [];
    const hits: BuildJson[] = [];
    for (let i = 0; i < 20; i++) {
      const t0 = performance.now();
      const res = await post(Q.replace('dest=app.tar', `dest=copy-${i}.tar`));
      const hit = (await res.json()) as BuildJson;
      postMs.push(performance.now() - t0);
      assert.equal(res.status, 201, JSON.stringify(hit));
      assert.ok(hit.artifact);
      const bytes = await download(hit.artifact.url);
      downloadableMs.push(performance.now() - t0);
      if (i === 0) assert.deepEqual(bytes, await download(source.artifact?.url ?? ''));
      hits.push(hit);
    }
    console.log(
      `result cache hit (small context): POST → signed URL median ${median(postMs).toFixed(1)} ms, ` +
        `max ${Math.max(...postMs).toFixed(1)} ms; POST → downloaded median ${median(downloadableMs).toFixed(1)} ms, ` +
        `max ${Math.max(...downloadableMs).toFixed(1)} ms (n=${postMs.length}, first ${postMs[0]?.toFixed(1)} ms)`,
    );

    const hit = hits[0] as BuildJson;
    assert.equal(hit.status, 'succeeded');
    assert.equal(hit.cached, true);
    assert.equal(hit.cachedFrom, source.id);
    assert.equal(hit.platform, source.platform);
    assert.equal(hit.startedAt, hit.finishedAt);
    assert.equal(hit.artifact?.filename, 'copy-0.tar');
    assert.equal(hit.artifact?.digest, source.artifact?.digest);
    assert.equal(hit.artifact?.size, source.artifact?.size);
    // Every hit names the build that ran, not an earlier hit; no job anywhere.
    assert.ok(hits.every((h) => h.cachedFrom === source.id && h.id !== source.id));
    for (const h of hits) assert.equal(await jobExists(h.id), false);
    assert.equal(await redis.zcard(`bull:${QUEUE_BUILDS}:prioritized`), waitingBefore);
    // The artifact object is shared, not copied.
    const objects = await fs.readdir(path.join(dataDir, 'objects/artifacts'));
    assert.deepEqual(objects, [source.id]);

    // GET: the same build, a freshly signed URL; /artifact redirects; the log points at the source.
    const again = await get(hit.id);
    assert.equal(again.cached, true);
    assert.ok(again.artifact?.url);
    assert.deepEqual(await download(again.artifact.url), await download(source.artifact?.url ?? ''));
    const redirect = await api(`/v1/builds/${hit.id}/artifact`);
    assert.equal(redirect.status, 302);
    assert.match(redirect.headers.get('location') ?? '', /filename=copy-0\.tar/);
    const log = await (await api(`/v1/builds/${hit.id}/logs`)).text();
    assert.match(log, new RegExp(`result cache: reused the artifact of build ${source.id}`));
    const sse = await (
      await api(`/v1/builds/${hit.id}/logs`, { headers: { accept: 'text/event-stream' } })
    ).text();
    assert.match(sse, /event: end\ndata: succeeded\n\n$/);
  });

  test('Idempotency-Key works with cache hits', async () => {
    const key = { 'idempotency-key': `cache-${Date.now()}` };
    const first = await post(Q, ctx, key);
    assert.equal(first.status, 201);
    const a = (await first.json()) as BuildJson;
    assert.equal(a.cached, true);
    const retry = await post(Q, ctx, key);
    assert.equal(retry.status, 200);
    assert.equal(((await retry.json()) as BuildJson).id, a.id);
    const conflict = await post(Q.replace('A=1', 'A=2'), ctx, key);
    assert.equal(conflict.status, 409);
  });

  test('misses: another build arg, target, context, noCache, or project', async () => {
    const misses = [
      await assertMiss(await post(Q.replace('A=1', 'A=2')), 'build arg'),
      await assertMiss(await post(`${Q}&build-arg=B=1`), 'extra build arg'),
      await assertMiss(await post(`${Q}&target=base`), 'target'),
      await assertMiss(await post(Q, otherCtx), 'context'),
      await assertMiss(await post(`${Q}&network=none`), 'network'),
      await assertMiss(await post(`${Q}&noCache=true`), 'noCache'),
    ];
    const theirs = await assertMiss(await post(Q, ctx, {}, otherToken), 'other project');
    // Each ran (a noCache build too: it is a result like any other and may serve later builds).
    for (const m of misses) assert.equal((await waitFor(m.id)).status, 'succeeded', m.id);
    assert.equal((await waitFor(theirs.id, otherToken)).status, 'succeeded');
  });

  test('platform: a spec without one reuses only results for the builders’ default platform', async () => {
    const published = await redis.hget(builderPlatformsKey(), BUILDER);
    assert.ok(published);
    try {
      // Unknown (no worker published it yet) → no reuse.
      await redis.hdel(builderPlatformsKey(), BUILDER);
      const unknown = await assertMiss(await post(Q), 'unknown default platform');
      // Another default (the pool was switched to other machines) → no reuse.
      await redis.hset(builderPlatformsKey(), BUILDER, 'linux/s390x');
      const other = await assertMiss(await post(Q), 'other default platform');
      await waitFor(unknown.id);
      await waitFor(other.id);
    } finally {
      await redis.hset(builderPlatformsKey(), BUILDER, published);
    }
    assert.equal((await post(Q)).status, 201);
    // A spec naming the platform: its own first build, then hits.
    const named = `${Q}&platform=${published}`;
    const first = await assertMiss(await post(named), 'named platform, first');
    const built = await waitFor(first.id);
    assert.equal(built.status, 'succeeded', JSON.stringify(built.error));
    assert.equal(built.platform, published);
    const hit = await post(named);
    assert.equal(hit.status, 201);
    assert.equal(((await hit.json()) as BuildJson).cachedFrom, first.id);
  });

  test('a context deleted between the upload and the insert is stored again before the build is queued', async () => {
    const digest = source.context.digest;
    const key = contextKey(digest.replace(/^sha256:/, ''));
    const { body } = await apiDeps.storage.get(key);
    const chunks: Buffer[] = [];
    for await (const c of body) chunks.push(c as Buffer);
    const bytes = Buffer.concat(chunks);
    // As if retention had deleted it right after receiveContext found it in storage.
    await apiDeps.storage.delete(key);
    let restored = 0;
    const context = {
      digest,
      size: bytes.length,
      key,
      uploaded: true,
      restore: async () => {
        restored++;
        await apiDeps.storage.put(key, Readable.from([bytes]));
      },
      dispose: async () => {},
    };
    const project = await apiDeps.db.project.findUniqueOrThrow({ where: { name: 'cache-a' } });
    const spec = parseBuildSpec({ output: 'type=tar,dest=again.tar', buildArgs: { A: '1' }, noCache: true });
    const { build, outcome } = await createBuild(
      apiDeps,
      project.id,
      spec,
      { kind: 'upload', context },
      undefined,
    );
    assert.equal(outcome, 'queued');
    assert.equal(restored, 1);
    assert.ok(await apiDeps.storage.head(key));
    assert.equal((await waitFor(build.id)).status, 'succeeded');
  });

  test('retention: expired sources keep a shared artifact while a cached build lives; then 410s, deleted objects, contexts gone', async () => {
    const hitRes = await post(Q.replace('dest=app.tar', 'dest=kept.tar'));
    assert.equal(hitRes.status, 201);
    const hit = (await hitRes.json()) as BuildJson;
    const hitUrl = hit.artifact?.url ?? '';
    const from = hit.cachedFrom ?? '';
    const fromUrl = (await get(from)).artifact?.url ?? '';
    const fromLog = path.join(dataDir, 'objects/logs', `${from}.log`);
    await fs.access(fromLog);

    // Every build that ran is past retention (as if it had run 40 days ago); the cached ones are not.
    const prisma = createPrismaClient(kiln.db.url);
    let ran: string[];
    try {
      const rows = await prisma.build.findMany({
        where: { cachedFromId: null, status: 'succeeded' },
        select: { id: true },
      });
      ran = rows.map((r) => r.id);
      await prisma.build.updateMany({
        where: { id: { in: ran } },
        data: { finishedAt: new Date(Date.now() - 40 * 24 * 3600 * 1000) },
      });
    } finally {
      await prisma.$disconnect();
    }
    assert.ok(ran.includes(source.id) && ran.includes(from));
    const first = await worker.runRetentionOnce(new Date());
    assert.deepEqual(new Set(first.expired), new Set(ran));
    assert.equal(first.failed, 0);
    const expired = await get(from);
    assert.equal(expired.status, 'expired');
    assert.equal(expired.artifact, undefined);
    const gone = await api(`/v1/builds/${from}/artifact`);
    assert.equal(gone.status, 410);
    assert.equal(((await gone.json()) as { error: { code: string } }).error.code, 'gone');
    assert.equal((await api(`/v1/builds/${from}/logs`)).status, 410);
    await assert.rejects(fs.access(fromLog));
    // Artifacts nobody shares are deleted; the one the cached builds share lives on.
    assert.ok(first.artifactsDeleted.length > 0);
    assert.ok(!first.artifactsDeleted.some((k) => k.startsWith(`artifacts/${from}/`)));
    assert.equal((await get(hit.id)).status, 'succeeded');
    assert.deepEqual(await download(hitUrl), await download(fromUrl));
    // A new request is still answered, through the live cached builds.
    const later = await post(Q);
    assert.equal(later.status, 201);
    const laterHit = (await later.json()) as BuildJson;
    assert.ok(ran.includes(laterHit.cachedFrom ?? ''));
    assert.ok((await download(laterHit.artifact?.url ?? '')).length > 0);

    // A year on, everything has expired: artifact objects deleted, signed URLs 404, contexts gone.
    const contextsBefore = await fs.readdir(path.join(dataDir, 'objects/contexts/sha256'));
    assert.ok(contextsBefore.length >= 2);
    const report = await worker.runRetentionOnce(new Date(Date.now() + 365 * 24 * 3600 * 1000));
    assert.ok(report.expired.includes(hit.id));
    assert.equal(report.failed, 0);
    const expiredHit = await get(hit.id);
    assert.equal(expiredHit.status, 'expired');
    assert.equal(expiredHit.artifact, undefined);
    assert.equal((await api(`/v1/builds/${hit.id}/artifact`)).status, 410);
    const stale = await fetch(hitUrl);
    assert.equal(stale.status, 404);
    assert.equal(((await stale.json()) as { error: { code: string } }).error.code, 'not_found');
    // No tar is left; the directories emptied went with them (local storage removes those).
    const tars = (dir: string) =>
      fs
        .readdir(path.join(dataDir, 'objects', dir), { recursive: true })
        .then((entries) => entries.filter((e) => e.endsWith('.tar')))
        .catch((err: NodeJS.ErrnoException) => (err.code === 'ENOENT' ? [] : Promise.reject(err)));
    assert.deepEqual(await tars('artifacts'), []);
    assert.deepEqual(await tars('contexts/sha256'), []);
    // No build is left that the cache could answer from.
    await assertMiss(await post(Q), 'after retention');
  });
});
