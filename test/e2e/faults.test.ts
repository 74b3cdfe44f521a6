// Fault tolerance end to end, everything real: the API in this process, workers as separate
// `node apps/worker/dist/main.js` processes, real PostgreSQL, Redis, Docker daemons and s3rver.
//   1. two worker processes share two builders: 20 concurrent builds all succeed on both daemons;
//   2. a builder dies mid-build: the build is retried on the other builder and succeeds;
//   3. Redis restarts (without persistence) with builds queued: the reconciler re-enqueues them;
//   4. S3 storage: a > 20 MiB artifact goes through a multipart upload and downloads exactly.
// More faults (workers killed, every builder down, PostgreSQL restarted, storage failing,
// SIGTERM under load, stuck builds) are in faults-*.test.ts; the harness in test/support/processes.ts.
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs/promises';
import path from 'node:path';
import { describe, test } from 'node:test';
import { QUEUE_BUILDS } from '@kiln/core';
import { Redis } from 'ioredis';
import { readTarEntries } from '../../packages/buildkit-client/test-support/tar-entries.js';
import { startS3rver } from '../../packages/core/test-support/s3rver.js';
import {
  addCleanup,
  BIG_DOCKERFILE,
  busyboxContext,
  checkArtifact,
  logger,
  MiB,
  once,
  pgQuery,
  RESULT_DOCKERFILE,
  s3rverEnv,
  scriptDockerfile,
  secs,
  sleep,
  startDockerd,
  startRedis,
  summarizeLog,
  testBuilders,
  tgz,
  withKiln,
} from '../support/processes.js';
import { startS3Proxy } from '../support/s3-proxy.js';

const { D1, D2 } = testBuilders();
const log = logger('faults');

// ---------------------------------------------------------------------------------------------

describe('Kiln under faults (worker processes, real daemons)', { concurrency: false }, () => {
  /** The plain (stored) log of the build retried after its builder died. */
  let retriedBuildLog: string | undefined;

  test('two worker processes, two builders: 20 concurrent builds all succeed on both daemons', {
    timeout: 120_000,
  }, async () => {
    const ctx = await busyboxContext(RESULT_DOCKERFILE);
    await withKiln({ project: 'faults-many', release: [() => ctx.cleanup()] }, async ({ api, spawn }) => {
      const workers = [spawn('w1'), spawn('w2')];
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
  });

  test('a builder killed mid-build: retried on the other builder, succeeds with attempts = 2', {
    timeout: 150_000,
  }, async () => {
    const t0 = Date.now();
    const doomed = await startDockerd();
    log(`third dockerd up in ${secs(Date.now() - t0)}: ${doomed.sock}`);
    const marker = `kiln-fault-${randomBytes(4).toString('hex')}`;
    const ctx = await busyboxContext(
      scriptDockerfile(
        `echo ${marker} start; /bin/busybox sleep 5; /bin/busybox mkdir -p /out; echo slept > /out/slept.txt`,
      ),
    );
    await withKiln(
      {
        project: 'faults-killed',
        // Ours first: with equal load the configuration order decides.
        env: { KILN_BUILDERS: `${doomed.address}=2,${D1}=2` },
        release: [() => ctx.cleanup(), () => doomed.cleanup()],
      },
      async ({ api: a, env, workers, spawn }) => {
        spawn('w');
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
      },
    );
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
    const ctx = await busyboxContext(RESULT_DOCKERFILE);
    const probe = new Redis(redis.url, { maxRetriesPerRequest: 1 });
    probe.on('error', () => {});
    await withKiln(
      {
        project: 'faults-redis',
        redisUrl: redis.url,
        env: { KILN_RECONCILE_INTERVAL_SECONDS: '2' },
        release: [() => probe.disconnect(), () => ctx.cleanup(), () => redis.cleanup()],
      },
      async ({ api: a, env, dataDir, spawn }) => {
        const context = await tgz(ctx.dir);
        // A worker proves the pipeline works on this Redis, then stops.
        const first = spawn('w0');
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
        const extra = await a.submit(context, 'output=type=tar,dest=x.tar&network=none&build-arg=N=extra');
        const tRestart = Date.now();
        await redis.stop();
        // Down: a queued build is canceled all the same (in PostgreSQL); what needs Redis is a 503.
        const cancel = await a.api(`/v1/builds/${extra.id}/cancel`, { method: 'POST' });
        assert.equal(cancel.status, 202, await cancel.clone().text());
        assert.equal(((await cancel.json()) as { status: string }).status, 'canceled');
        const stats = await a.api('/v1/stats?hours=1');
        assert.equal(stats.status, 503);
        assert.deepEqual(((await stats.json()) as { error: { code: string } }).error.code, 'unavailable');
        await redis.start();
        assert.equal(await probe.dbsize(), 0, 'the restarted Redis is empty');
        log(`redis restarted in ${secs(Date.now() - tRestart)}; its data is gone`);
        for (const b of queued) assert.equal((await a.get(b.id)).status, 'queued');

        const t0 = Date.now();
        const second = spawn('w1');
        const done = await Promise.all(
          queued.map((b) => a.waitFor(b.id, ['succeeded', 'failed', 'canceled'], 90_000)),
        );
        const tDone = Date.now() - t0;
        for (const [i, b] of done.entries()) {
          assert.equal(b.status, 'succeeded', `${b.id}: ${JSON.stringify(b.error)}`);
          assert.equal(b.attempts, 1, `${b.id} ran ${b.attempts} times`);
          await checkArtifact(b, 'out/result.txt', `built-${i}\n`);
          const files = await fs.readdir(path.join(dataDir, 'objects', 'artifacts', b.id), {
            recursive: true,
          });
          assert.deepEqual(files.sort(), ['1', `1/q${i}.tar`], `one artifact for ${b.id}, its attempt's`);
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
      },
    );
  });

  test('S3 storage (s3rver): a 24 MiB artifact is uploaded in 8 MiB parts and downloads exactly', {
    timeout: 150_000,
  }, async () => {
    const s3 = await startS3rver();
    addCleanup(once(() => s3.stop()));
    // A transparent proxy in front of s3rver for the worker only, to see each UploadPart request.
    const parts: Array<{ key: string; part: number; bytes: number; status: number }> = [];
    const completes: string[] = [];
    const proxy = await startS3Proxy(s3.endpoint, {
      intercept: (call) => {
        if (call.method === 'POST' && call.url.searchParams.has('uploadId')) completes.push(call.key);
        return false;
      },
      answered: (call, status, bytes) => {
        if (call.part !== null) parts.push({ key: call.key, part: call.part, bytes, status });
      },
    });
    const ctx = await busyboxContext(BIG_DOCKERFILE);
    await withKiln(
      {
        project: 'faults-s3',
        env: s3rverEnv(s3),
        release: [() => ctx.cleanup(), () => proxy.close(), () => s3.stop()],
      },
      async ({ api: a, env, workers, spawn }) => {
        assert.equal(a.config.storage.kind, 's3');
        spawn('w', { ...env, KILN_S3_ENDPOINT: proxy.endpoint });
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
        assert.equal(url.pathname, `/${s3.bucket}/artifacts/${b.id}/1/big.tar`);
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
          .filter((p) => p.key === `artifacts/${b.id}/1/big.tar`)
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
        assert.deepEqual(completes.filter((k) => k === `artifacts/${b.id}/1/big.tar`).length, 1);
        const leftover = await fs.readdir(s3.uploadsDir).catch(() => [] as string[]);
        assert.deepEqual(leftover, [], 'no multipart upload left open in s3rver');
        log(
          `S3: ${(done.artifact.size / MiB).toFixed(1)} MiB artifact built and stored in ${secs(tBuild)} ` +
            `as ${ours.length} parts [${ours.map((p) => (p.bytes / MiB).toFixed(2)).join(', ')}] MiB; ` +
            `presigned download + sha256 in ${secs(tDownload)}`,
        );
        assert.equal(await workers[0]?.stop(), 0);
        log(`worker warnings: ${summarizeLog(workers[0]?.output() ?? '')}`);
      },
    );
  });
});
