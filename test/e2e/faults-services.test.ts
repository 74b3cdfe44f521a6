// Faults of the services Kiln depends on, and of the API process, everything real (harness:
// test/support/processes.ts):
//   1. PostgreSQL (a private cluster) restarted under load: the API answers 503 `unavailable`
//      while it is down (no 500, no hang) and recovers by itself; workers record the builds they
//      finished meanwhile once it is back, each once;
//   2. storage failing mid-upload (a proxy in front of s3rver fails UploadPart): the multipart
//      upload is aborted, no partial object is visible, the build is retried and succeeds;
//   3. storage that stops answering after the solve: the build's time limit ends the attempt as
//      storage's failure (retried), not the build's;
//   4. SIGTERM to the API process with uploads in flight: they complete (202), the process exits
//      0, no half-stored context, every accepted build runs.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs/promises';
import path from 'node:path';
import { describe, test } from 'node:test';
import { bootstrapProject } from '@kiln/api';
import { Redis } from 'ioredis';
import { startS3rver } from '../../packages/core/test-support/s3rver.js';
import { freePort, testRedisUrl } from '../../packages/core/test-support/services.js';
import {
  addCleanup,
  apiClient,
  attemptsOf,
  BIG_DOCKERFILE,
  type BuildJson,
  busyboxContext,
  checkArtifact,
  endsOf,
  FINAL,
  flushRedis,
  type KilnProcess,
  listFiles,
  logger,
  MiB,
  RESULT_DOCKERFILE,
  s3rverEnv,
  scriptDockerfile,
  secs,
  serviceEnv,
  sha256,
  sleep,
  spawnApi,
  spawnWorker,
  startPostgres,
  summarizeLog,
  testBuilders,
  tgz,
  withKiln,
  withOutputOnFailure,
} from '../support/processes.js';
import { startS3Proxy } from '../support/s3-proxy.js';

const { D1 } = testBuilders();
const log = logger('faults-services');

/** status → count, e.g. "503 unavailable ×40, 202 ×3". */
function histogram(items: string[]): string {
  const m = new Map<string, number>();
  for (const i of items) m.set(i, (m.get(i) ?? 0) + 1);
  return [...m].map(([k, n]) => `${k} ×${n}`).join(', ');
}

describe('service faults (PostgreSQL, storage, API process)', { concurrency: false }, () => {
  test('PostgreSQL restarted under load: 503 unavailable while down, recovery, builds recorded once', {
    timeout: 300_000,
  }, async () => {
    const pg = await startPostgres();
    const ctx = await busyboxContext(
      scriptDockerfile('/bin/busybox sleep 4; /bin/busybox mkdir -p /out; echo built-$N > /out/result.txt'),
    );
    const redisUrl = testRedisUrl();
    const redis = new Redis(redisUrl);
    await withKiln(
      {
        project: 'faults-pg',
        redisUrl,
        env: { KILN_RECONCILE_INTERVAL_SECONDS: '2' },
        databaseUrl: pg.url,
        release: [() => redis.disconnect(), () => ctx.cleanup(), () => pg.cleanup()],
      },
      async ({ api: a, env, workers, spawn }) => {
        spawn('w1');
        spawn('w2');
        const context = await tgz(ctx.dir);
        const builds = await Promise.all(
          Array.from({ length: 8 }, (_, i) =>
            a.submit(context, `output=type=tar,dest=r${i}.tar&network=none&noCache=true&build-arg=N=${i}`),
          ),
        );
        // Some running (the 4 s RUN step), the rest queued: then PostgreSQL goes away.
        for (;;) {
          const states = await Promise.all(builds.map((b) => a.get(b.id)));
          if (states.filter((b) => b.status === 'running').length >= 2) break;
          await sleep(100);
        }
        const tStop = Date.now();
        await pg.stop();
        const tStopped = Date.now();

        // While it is down: every request needing the database gets a prompt 503 `unavailable`.
        const answers: string[] = [];
        const slowest = { ms: 0 };
        const probe = async (what: string, init?: RequestInit) => {
          const t = Date.now();
          try {
            const res = await a.api(what, { ...init, signal: AbortSignal.timeout(15_000) });
            const body = (await res.json().catch(() => ({}))) as { error?: { code?: string } };
            answers.push(`${res.status} ${body.error?.code ?? ''}`.trim());
          } catch (err) {
            answers.push(`no answer (${(err as Error).name})`);
          }
          slowest.ms = Math.max(slowest.ms, Date.now() - t);
        };
        const downUntil = Date.now() + 12_000;
        while (Date.now() < downUntil) {
          await Promise.all([
            probe(`/v1/builds/${builds[0]?.id}`),
            probe('/v1/builds?limit=5'),
            probe('/v1/builds?output=type=tar,dest=x.tar&network=none&noCache=true&build-arg=N=down', {
              method: 'POST',
              body: context,
              headers: { 'content-type': 'application/gzip' },
            }),
          ]);
          await sleep(200);
        }
        const ready = await fetch(`${a.base}/readyz`, { signal: AbortSignal.timeout(15_000) });
        const tRestart = Date.now();
        await pg.start();
        const tStarted = Date.now();
        assert.ok(answers.length >= 30, `probes: ${answers.length}`);
        assert.deepEqual(
          [...new Set(answers)],
          ['503 unavailable'],
          `answers while PostgreSQL was down: ${histogram(answers)}`,
        );
        assert.ok(slowest.ms < 5_000, `slowest answer while down: ${slowest.ms} ms`);
        assert.equal(ready.status, 503, '/readyz says not ready');

        // Recovers by itself: no restart of the API or the workers.
        let tRecovered = 0;
        for (let i = 0; ; i++) {
          const res = await a.api(`/v1/builds/${builds[0]?.id}`);
          if (res.status === 200) {
            tRecovered = Date.now();
            break;
          }
          assert.equal(res.status, 503);
          assert.ok(i < 300, 'the API answers again within 30 s');
          await sleep(100);
        }
        const done = await Promise.all(builds.map((b) => a.waitFor(b.id, FINAL, 180_000)));
        const tDone = Date.now();
        for (const [i, b] of done.entries()) {
          assert.equal(b.status, 'succeeded', `${b.id}: ${JSON.stringify(b.error)}`);
          await checkArtifact(b, 'out/result.txt', `built-${i}\n`);
          assert.deepEqual(await endsOf(redis, b.id), ['succeeded'], `one final state of ${b.id}`);
        }
        const attempts = await attemptsOf(
          env.DATABASE_URL as string,
          builds.map((b) => b.id),
        );
        for (const b of builds) {
          const mine = attempts.filter((r) => r.buildId === b.id);
          assert.equal(
            mine.filter((r) => r.outcome === 'succeeded').length,
            1,
            `${b.id}: ${JSON.stringify(mine)}`,
          );
        }
        const attemptsHist = histogram(done.map((b) => String(b.attempts)));
        const workerLogs = workers.map((w) => w.output()).join('\n');
        const retried = (workerLogs.match(/database unavailable: retrying the write/g) ?? []).length;
        const recorded = (workerLogs.match(/database back: write done/g) ?? []).length;
        const handedBack = (workerLogs.match(/database unavailable: job handed back/g) ?? []).length;
        assert.ok(recorded >= 1, 'a build finished while PostgreSQL was down was recorded once it was back');
        for (const w of workers) assert.equal(await w.stop(), 0);
        log(
          `PostgreSQL stopped with builds running (stop took ${secs(tStopped - tStop)}), down ` +
            `${secs(tStarted - tStopped)}: ${answers.length} API answers meanwhile: ${histogram(answers)} ` +
            `(slowest ${slowest.ms} ms); /readyz ${ready.status}; restart took ${secs(tStarted - tRestart)}; ` +
            `API answering again ${secs(tRecovered - tStarted)} after; all 8 builds succeeded ` +
            `${secs(tDone - tStarted)} after (attempts ${attemptsHist}); worker writes retried ` +
            `${retried}× and recorded ${recorded}×, jobs handed back ${handedBack}×`,
        );
        log(`worker warnings: ${summarizeLog(workerLogs)}`);
      },
    );
  });

  test('storage failing mid-upload: multipart aborted, nothing partial visible, retried, succeeds', {
    timeout: 240_000,
  }, async () => {
    const s3 = await startS3rver();
    addCleanup(() => s3.stop());
    // A proxy in front of s3rver for the worker only: fails every UploadPart while `failing`.
    let failing = true;
    const seen = { creates: 0, partsFailed: 0, partsOk: 0, aborts: 0, completes: 0 };
    const proxy = await startS3Proxy(s3.endpoint, {
      intercept: ({ method, url, part }, req, res) => {
        if (method === 'POST' && url.searchParams.has('uploads')) seen.creates++;
        if (method === 'POST' && url.searchParams.has('uploadId')) seen.completes++;
        if (method === 'DELETE' && url.searchParams.has('uploadId')) {
          seen.aborts++;
          // The abort goes through; the storage "recovers" after it (the retry may succeed).
          res.on('finish', () => {
            failing = false;
          });
        }
        if (part === null) return false;
        if (!failing) {
          seen.partsOk++;
          return false;
        }
        seen.partsFailed++;
        req.resume();
        req.on('end', () => {
          res.writeHead(500, { 'content-type': 'application/xml' });
          res.end(
            '<?xml version="1.0" encoding="UTF-8"?><Error><Code>InternalError</Code><Message>injected</Message></Error>',
          );
        });
        return true;
      },
    });
    const ctx = await busyboxContext(BIG_DOCKERFILE);
    await withKiln(
      {
        project: 'faults-storage',
        env: { ...s3rverEnv(s3), KILN_BUILDERS: `${D1}=2` },
        release: [() => ctx.cleanup(), () => proxy.close(), () => s3.stop()],
      },
      async ({ api: a, env, workers, spawn }) => {
        spawn('w', { ...env, KILN_S3_ENDPOINT: proxy.endpoint });
        const t0 = Date.now();
        const b = await a.submit(
          await tgz(ctx.dir),
          'output=type=tar,dest=big.tar&network=none&noCache=true',
        );
        // Attempt 1's key: the attempt storage fails under.
        const objectFile = path.join(
          s3.directory,
          s3.bucket,
          'artifacts',
          b.id,
          '1',
          'big.tar._S3rver_object',
        );
        // Watch the build and the bucket all along: an artifact (URL) only for a complete, hashed object.
        const views: BuildJson[] = [];
        let partialSeen = false;
        let watching = true;
        const watcher = (async () => {
          while (watching) {
            const v = await a.get(b.id);
            views.push(v);
            const exists = await fs.stat(objectFile).then(
              () => true,
              () => false,
            );
            if (exists && v.status !== 'succeeded' && failing) partialSeen = true;
            if (FINAL.includes(v.status)) break;
            await sleep(100);
          }
        })();
        const done = await a.waitFor(b.id, FINAL, 180_000);
        watching = false;
        await watcher;
        const tDone = Date.now();
        assert.equal(done.status, 'succeeded', JSON.stringify(done.error));
        assert.equal(done.attempts, 2);
        await checkArtifact(done, 'big');
        assert.ok(seen.partsFailed >= 1 && seen.aborts >= 1, JSON.stringify(seen));
        assert.equal(seen.completes, 1, 'one multipart upload completed');
        assert.equal(partialSeen, false, 'no object under the artifact key while storage failed');
        assert.equal(await fs.stat(objectFile).catch(() => undefined), undefined, 'attempt 1 left no object');
        for (const v of views) {
          if (v.artifact) assert.equal(v.status, 'succeeded', `artifact shown for a ${v.status} build`);
          if (v.artifact) assert.equal(v.artifact.digest, done.artifact?.digest);
        }
        assert.deepEqual(await listFiles(s3.uploadsDir), [], 'no multipart upload left open');
        const attempts = await attemptsOf(env.DATABASE_URL as string, [b.id]);
        assert.deepEqual(
          attempts.map((r) => [r.number, r.outcome, r.errorCode]),
          [
            [1, 'failed', 'infrastructure'],
            [2, 'succeeded', null],
          ],
        );
        const stored = await a.logs(b.id);
        assert.match(stored, /storing the artifact failed/);
        assert.equal(await workers[0]?.stop(), 0);
        log(
          `storage failing: ${seen.partsFailed} UploadPart requests failed (SDK retries included), ` +
            `${seen.aborts} abort(s), then ${seen.partsOk} parts stored and ${seen.completes} upload completed; ` +
            `succeeded on attempt 2 after ${secs(tDone - t0)}; ${views.length} polls, none showed an artifact before success`,
        );
        log(`worker warnings: ${summarizeLog(workers[0]?.output() ?? '')}`);
      },
    );
  });

  test("storage that stops answering once the solve is done: the attempt ends at the build's time limit, as storage's failure, and the retry succeeds", {
    timeout: 180_000,
  }, async () => {
    const s3 = await startS3rver();
    addCleanup(() => s3.stop());
    // A store that takes attempt 1's artifact request and never answers it (the SDK's socket
    // timeout, 30 s a try, is longer than the build's time limit here).
    let held = 0;
    const proxy = await startS3Proxy(s3.endpoint, {
      intercept: ({ key }, req) => {
        if (!/^artifacts\/[^/]+\/1\//.test(key)) return false;
        held++;
        req.resume();
        return true;
      },
    });
    const ctx = await busyboxContext(RESULT_DOCKERFILE);
    await withKiln(
      {
        project: 'faults-storage-silent',
        env: { ...s3rverEnv(s3), KILN_BUILDERS: `${D1}=2`, KILN_BUILD_TIMEOUT_SECONDS: '15' },
        release: [() => ctx.cleanup(), () => proxy.close(), () => s3.stop()],
      },
      async ({ api: a, env, workers, spawn }) => {
        spawn('w', { ...env, KILN_S3_ENDPOINT: proxy.endpoint });
        const b = await a.submit(await tgz(ctx.dir), 'output=type=tar,dest=app.tar&network=none');
        const done = await a.waitFor(b.id, FINAL, 150_000);
        assert.equal(done.status, 'succeeded', JSON.stringify(done.error));
        await checkArtifact(done, 'out/result.txt', 'built-0\n');
        assert.ok(held >= 1, 'attempt 1 sent its artifact');
        const attempts = await attemptsOf(env.DATABASE_URL as string, [b.id]);
        assert.deepEqual(
          attempts.map((r) => [r.number, r.outcome, r.errorCode]),
          [
            [1, 'failed', 'infrastructure'],
            [2, 'succeeded', null],
          ],
        );
        assert.match(await a.logs(b.id), /storing the artifact did not end within the build's time limit/);
        assert.deepEqual(await listFiles(s3.uploadsDir), [], 'no multipart upload left open');
        assert.equal(await workers[0]?.stop(), 0);
      },
    );
  });

  test('SIGTERM to the API process with uploads in flight: they complete, nothing half-stored', {
    timeout: 240_000,
  }, async () => {
    const workers: KilnProcess[] = [];
    const apis: KilnProcess[] = [];
    const redisUrl = testRedisUrl();
    await flushRedis(redisUrl);
    const ctxs = await Promise.all(
      Array.from({ length: 6 }, async (_, i) =>
        // Random bytes: the gzip stays large, so each upload takes a while.
        busyboxContext(RESULT_DOCKERFILE, { [`noise-${i}`]: { content: randomBytes(3 * MiB), mode: 0o644 } }),
      ),
    );
    try {
      const { env, dataDir } = await serviceEnv(redisUrl, { KILN_BUILDERS: `${D1}=2` });
      const port = await freePort();
      const api1 = await spawnApi('api1', env, port);
      apis.push(api1);
      const token = await bootstrapProject(env.DATABASE_URL as string, 'faults-api-sigterm');
      const a = apiClient(api1.base, token);
      workers.push(spawnWorker('w', env));
      await withOutputOnFailure([...apis, ...workers], async () => {
        const bodies = await Promise.all(ctxs.map((c) => tgz(c.dir)));
        let started = 0;
        /** An upload sent in 64 KiB chunks over about 3 s. */
        const slowUpload = async (body: Buffer, i: number) => {
          const chunks = Math.ceil(body.length / (64 * 1024));
          const stream = new ReadableStream<Uint8Array>({
            async start(controller) {
              for (let c = 0; c < chunks; c++) {
                controller.enqueue(body.subarray(c * 64 * 1024, (c + 1) * 64 * 1024));
                if (c === 0) started++;
                await sleep(3000 / chunks);
              }
              controller.close();
            },
          });
          try {
            const res = await a.api(
              `/v1/builds?output=type=tar,dest=r${i}.tar&network=none&noCache=true&build-arg=N=${i}`,
              {
                method: 'POST',
                body: stream,
                headers: { 'content-type': 'application/gzip' },
                duplex: 'half',
                signal: AbortSignal.timeout(60_000),
              } as RequestInit,
            );
            return {
              status: res.status,
              body: (await res.json()) as BuildJson & { error?: { code: string } },
            };
          } catch (err) {
            return { status: 0, body: undefined, error: (err as Error).message };
          }
        };
        const uploads = bodies.map((body, i) => slowUpload(body, i));
        while (started < bodies.length) await sleep(20);
        await sleep(300);
        const tTerm = Date.now();
        const exit = api1.stop(60_000);
        const results = await Promise.all(uploads);
        const code = await exit;
        const tExit = Date.now();
        const answered = histogram(results.map((r) => String(r.status)));
        assert.equal(code, 0, `the API exits 0 after SIGTERM (uploads: ${answered})`);
        const accepted = results.filter((r) => r.status === 202);
        for (const r of results) {
          // Complete (202) or a clean error answer: never a dropped connection.
          assert.ok(r.status === 202 || (r.status === 503 && r.body?.error), JSON.stringify(r));
        }
        // Contexts: only complete ones, each stored under its own digest; no temp files left.
        const objects = path.join(dataDir, 'objects');
        const contextFiles = await listFiles(path.join(objects, 'contexts'));
        for (const f of contextFiles) {
          assert.match(f, /^sha256\/[0-9a-f]{64}\.tar$/, `only complete context objects: ${f}`);
          const bytes = await fs.readFile(path.join(objects, 'contexts', f));
          assert.equal(`sha256/${sha256(bytes)}.tar`, f, 'a context object holds what its name says');
        }
        assert.deepEqual(await listFiles(path.join(dataDir, 'tmp')), [], 'no upload temp file left');

        // A new API process: every accepted build runs to success.
        const api2 = await spawnApi('api2', env, port);
        apis.push(api2);
        const b = apiClient(api2.base, token);
        const done = await Promise.all(
          accepted.map((r) => b.waitFor((r.body as BuildJson).id, FINAL, 120_000)),
        );
        for (const d of done) assert.equal(d.status, 'succeeded', JSON.stringify(d.error));
        assert.equal(contextFiles.length, accepted.length, 'one stored context per accepted upload');
        assert.equal(await api2.stop(), 0);
        assert.equal(await workers[0]?.stop(), 0);
        log(
          `SIGTERM with ${bodies.length} uploads of ~${((bodies[0]?.length ?? 0) / MiB).toFixed(1)} MiB in flight: ` +
            `answers ${answered}; the API exited 0 after ${secs(tExit - tTerm)}; ` +
            `${contextFiles.length} complete contexts stored, no temp file; all ${done.length} accepted builds succeeded`,
        );
      });
    } finally {
      await Promise.all([...apis, ...workers].map((w) => w.stop(10_000)));
      await Promise.all(ctxs.map((c) => c.cleanup()));
    }
  });
});
