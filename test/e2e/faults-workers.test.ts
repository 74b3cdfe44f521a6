// Faults of the workers and their builders, with real processes (harness: test/support/processes.ts):
//   1. a worker killed with SIGKILL mid-build: the job is recovered and succeeds exactly once
//      (attempts = 2, one artifact, no multipart upload left, the dead worker's temp dir removed);
//   2. SIGTERM to a worker under load: builds finish within the grace period or are handed back,
//      another worker finishes them, nothing stays `running`;
//   3. every builder down: builds end `failed` with no_builder_available, never stuck `running`;
//   4. a stuck build (a RUN that sleeps far longer than KILN_BUILD_TIMEOUT_SECONDS) ends `timeout`.
import assert from 'node:assert/strict';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { describe, test } from 'node:test';
import { Redis } from 'ioredis';
import { startS3rver } from '../../packages/core/test-support/s3rver.js';
import { testRedisUrl } from '../../packages/core/test-support/services.js';
import {
  addCleanup,
  attemptsOf,
  busyboxContext,
  checkArtifact,
  endsOf,
  FINAL,
  listFiles,
  logger,
  processRuns,
  s3rverEnv,
  scriptDockerfile,
  secs,
  startDockerd,
  summarizeLog,
  tempDir,
  testBuilders,
  tgz,
  waitUntil,
  withKiln,
} from '../support/processes.js';

const { D1 } = testBuilders();
const log = logger('faults-workers');

/** A build whose RUN step prints `marker`, sleeps `seconds`, then writes /out/slept.txt. */
async function sleepyContext(marker: string, seconds: number) {
  return busyboxContext(
    scriptDockerfile(
      `echo ${marker} $N; /bin/busybox sleep ${seconds}; /bin/busybox mkdir -p /out; echo slept-$N > /out/slept.txt`,
    ),
  );
}

const marker = () => `kiln-fault-${Math.random().toString(16).slice(2, 10)}`;

describe('worker and builder faults (worker processes, real daemons)', { concurrency: false }, () => {
  test('a worker killed with SIGKILL mid-build: the job is recovered, succeeds once with attempts = 2', {
    timeout: 240_000,
  }, async () => {
    const s3 = await startS3rver();
    addCleanup(() => s3.stop());
    const tmp = await tempDir(path.join(os.tmpdir(), 'kiln-wtmp-'));
    const mark = marker();
    const ctx = await sleepyContext(mark, 8);
    const redisUrl = testRedisUrl();
    const redis = new Redis(redisUrl);
    await withKiln(
      {
        project: 'faults-kill9',
        redisUrl,
        env: { KILN_BUILDERS: `${D1}=2`, ...s3rverEnv(s3), KILN_RECONCILE_INTERVAL_SECONDS: '5' },
        release: [() => redis.disconnect(), () => ctx.cleanup(), () => s3.stop()],
      },
      async ({ api: a, env, spawn }) => {
        const workerEnv = { ...env, TMPDIR: tmp.dir };
        const w1 = spawn('w1', workerEnv);
        const b = await a.submit(await tgz(ctx.dir), 'output=type=tar,dest=s.tar&network=none&noCache=true');
        const running = await a.waitFor(b.id, ['running', ...FINAL], 60_000);
        assert.equal(running.status, 'running');
        await waitUntil('the RUN step started', () => processRuns(mark), 30_000);
        // w1's scratch directory holds the build's directory with the extracted context.
        const before = await listFiles(tmp.dir);
        assert.ok(
          before.some((f) => new RegExp(`^kiln-worker-${w1.pid}-[^/]+/kiln-build-[^/]+/context/`).test(f)),
          `w1's build directory: ${before.join(', ')}`,
        );

        const tKill = Date.now();
        await w1.kill();
        // A new worker on the same machine removes what the killed one left, and takes over.
        const w2 = spawn('w2', workerEnv);
        await waitUntil(
          "w1's scratch directory removed by w2",
          async () => !(await fs.readdir(tmp.dir)).some((n) => n.startsWith(`kiln-worker-${w1.pid}-`)),
          30_000,
        );
        const tCleaned = Date.now();
        // The daemon ends the dead worker's solve once its session is gone.
        await waitUntil('the killed build’s RUN step ended', async () => !(await processRuns(mark)), 60_000);
        const tRunGone = Date.now();

        const done = await a.waitFor(b.id, FINAL, 180_000);
        const tDone = Date.now();
        assert.equal(done.status, 'succeeded', JSON.stringify(done.error));
        assert.equal(done.attempts, 2);
        await checkArtifact(done, 'out/slept.txt', 'slept-0\n');
        const attempts = await attemptsOf(env.DATABASE_URL as string, [b.id]);
        assert.deepEqual(
          attempts.map((r) => [r.number, r.outcome, r.errorCode]),
          [
            [1, 'lost', 'worker_lost'],
            [2, 'succeeded', null],
          ],
        );
        // One final state: a single `end` in the live log stream.
        assert.deepEqual(await endsOf(redis, b.id), ['succeeded']);
        // One artifact object, attempt 2's (each attempt stores under its own key), no multipart
        // upload left behind.
        const objects = (await listFiles(path.join(s3.directory, s3.bucket, 'artifacts', b.id))).filter((f) =>
          f.endsWith('._S3rver_object'),
        );
        assert.deepEqual(objects, ['2/s.tar._S3rver_object']);
        assert.deepEqual(await listFiles(s3.uploadsDir), [], 'no multipart upload left open');

        assert.equal(await w2.stop(), 0);
        assert.deepEqual(await fs.readdir(tmp.dir), [], 'no worker temp dir left');
        log(
          `killed w1 mid-RUN; w2 removed its scratch dir ${secs(tCleaned - tKill)} later; the daemon ended ` +
            `the orphaned RUN after ${secs(tRunGone - tKill)}; the build succeeded on attempt 2 ` +
            `${secs(tDone - tKill)} after the kill (BullMQ lock 30 s + stalled check)`,
        );
        log(`w2 warnings: ${summarizeLog(w2.output())}`);
      },
    );
  });

  test('SIGTERM to a worker under load: builds finish or are handed back, none stays running', {
    timeout: 240_000,
  }, async () => {
    const mark = marker();
    const ctx = await sleepyContext(mark, 6);
    const redisUrl = testRedisUrl();
    const redis = new Redis(redisUrl);
    await withKiln(
      {
        project: 'faults-sigterm-worker',
        redisUrl,
        env: { KILN_SHUTDOWN_GRACE_SECONDS: '3' },
        release: [() => redis.disconnect(), () => ctx.cleanup()],
      },
      async ({ api: a, env, spawn }) => {
        const w1 = spawn('w1');
        const context = await tgz(ctx.dir);
        const builds = await Promise.all(
          Array.from({ length: 6 }, (_, i) =>
            a.submit(context, `output=type=tar,dest=r${i}.tar&network=none&noCache=true&build-arg=N=${i}`),
          ),
        );
        // w1 runs 4 (its concurrency); 2 wait in the queue.
        await waitUntil(
          'four builds running',
          async () =>
            (await Promise.all(builds.map((b) => a.get(b.id)))).filter((b) => b.status === 'running')
              .length >= 4,
          60_000,
        );
        const w2 = spawn('w2');
        const tTerm = Date.now();
        const exit = await w1.stop(60_000);
        const tExit = Date.now();
        assert.equal(exit, 0, 'w1 exits 0 after SIGTERM');
        assert.ok(tExit - tTerm < 30_000, `w1 took ${secs(tExit - tTerm)} to stop`);

        const done = await Promise.all(builds.map((b) => a.waitFor(b.id, FINAL, 150_000)));
        for (const [i, b] of done.entries()) {
          assert.equal(b.status, 'succeeded', `${b.id}: ${JSON.stringify(b.error)}`);
          await checkArtifact(b, 'out/slept.txt', `slept-${i}\n`);
          assert.deepEqual(await endsOf(redis, b.id), ['succeeded'], `one final state of ${b.id}`);
        }
        const attempts = await attemptsOf(
          env.DATABASE_URL as string,
          builds.map((b) => b.id),
        );
        const handedBack = attempts.filter((r) => r.outcome === 'lost');
        for (const r of handedBack) assert.equal(r.errorCode, 'worker_stopped', JSON.stringify(r));
        assert.ok(
          handedBack.length >= 1,
          'a 6 s RUN outlasts a 3 s grace period: some build was handed back',
        );
        for (const b of done) {
          const mine = attempts.filter((r) => r.buildId === b.id);
          assert.equal(mine.filter((r) => r.outcome === 'succeeded').length, 1, `one success of ${b.id}`);
          assert.ok(
            mine.every((r) => r.outcome !== null),
            `no open attempt of ${b.id}`,
          );
        }
        assert.equal(await w2.stop(), 0);
        log(
          `SIGTERM with 4 builds running: w1 exited 0 after ${secs(tExit - tTerm)} (grace 3 s); ` +
            `${handedBack.length} handed back and finished by w2; all 6 succeeded once; ` +
            `attempts: ${done.map((b) => b.attempts).join(',')}`,
        );
        log(`w1 warnings: ${summarizeLog(w1.output())}`);
      },
    );
  });

  test('every builder down: builds end failed with no_builder_available, never stuck running', {
    timeout: 240_000,
  }, async () => {
    const [x, y] = await Promise.all([startDockerd(), startDockerd()]);
    if (!x || !y) throw new Error('dockerds');
    const mark = marker();
    const ctx = await sleepyContext(mark, 60);
    await withKiln(
      {
        project: 'faults-no-builder',
        env: { KILN_BUILDERS: `${x.address}=1,${y.address}=1`, KILN_BUILD_ATTEMPTS: '3' },
        release: [() => ctx.cleanup(), () => Promise.all([x.cleanup(), y.cleanup()])],
      },
      async ({ api: a, env, spawn }) => {
        const w = spawn('w');
        const context = await tgz(ctx.dir);
        // Two builds running, one on each builder; then both daemons die.
        const running = await Promise.all(
          [0, 1].map((i) =>
            a.submit(context, `output=type=tar,dest=r.tar&network=none&noCache=true&build-arg=N=${i}`),
          ),
        );
        for (const b of running)
          assert.equal((await a.waitFor(b.id, ['running', ...FINAL], 60_000)).status, 'running');
        await waitUntil('both RUN steps started', async () => processRuns(mark), 30_000);
        const tDown = Date.now();
        await Promise.all([x.stop(), y.stop()]);
        // And one submitted while no builder is up.
        const late = await a.submit(
          context,
          'output=type=tar,dest=r.tar&network=none&noCache=true&build-arg=N=late',
        );
        const all = [...running, late];
        const done = await Promise.all(all.map((b) => a.waitFor(b.id, FINAL, 90_000)));
        const tDone = Date.now();
        for (const b of done) {
          assert.equal(b.status, 'failed', JSON.stringify(b));
          assert.equal(b.error?.code, 'no_builder_available', JSON.stringify(b.error));
          assert.match(b.error?.message ?? '', /gave up after 3 attempts/);
        }
        const attempts = await attemptsOf(
          env.DATABASE_URL as string,
          all.map((b) => b.id),
        );
        assert.ok(
          attempts.every((r) => r.outcome !== null),
          `no open attempt: ${JSON.stringify(attempts)}`,
        );
        assert.equal(await w.stop(), 0);
        log(
          `both builders stopped with 2 builds running: all 3 builds failed no_builder_available ` +
            `${secs(tDone - tDown)} later (3 attempts, backoff 2 s + 4 s); attempt rows: ` +
            attempts.map((r) => `${r.number}:${r.outcome}/${r.errorCode}`).join(', '),
        );
      },
    );
  });

  test('a stuck build (RUN sleeps 10 min) is ended by KILN_BUILD_TIMEOUT_SECONDS=10 with code timeout', {
    timeout: 180_000,
  }, async () => {
    const mark = marker();
    const ctx = await sleepyContext(mark, 600);
    await withKiln(
      {
        project: 'faults-stuck',
        env: { KILN_BUILDERS: `${D1}=2`, KILN_BUILD_TIMEOUT_SECONDS: '10' },
        release: [() => ctx.cleanup()],
      },
      async ({ api: a, spawn }) => {
        const w = spawn('w');
        const b = await a.submit(await tgz(ctx.dir), 'output=type=tar,dest=r.tar&network=none&noCache=true');
        assert.equal((await a.waitFor(b.id, ['running', ...FINAL], 60_000)).status, 'running');
        const tRunning = Date.now();
        await waitUntil('the RUN step started', () => processRuns(mark), 30_000);
        const done = await a.waitFor(b.id, FINAL, 90_000);
        const tDone = Date.now();
        assert.equal(done.status, 'failed');
        assert.equal(done.error?.code, 'timeout');
        assert.match(done.error?.message ?? '', /time limit of 10 s \(KILN_BUILD_TIMEOUT_SECONDS\)/);
        assert.equal(done.attempts, 1, 'a timeout is not retried');
        assert.ok(tDone - tRunning >= 9_000, `ended after ${secs(tDone - tRunning)}`);
        // The solve was aborted: the daemon stops the RUN step.
        await waitUntil('the stuck RUN step ended', async () => !(await processRuns(mark)), 60_000);
        const tGone = Date.now();
        const stored = await a.logs(b.id);
        assert.match(stored, /time limit of 10 s/);
        assert.equal(await w.stop(), 0);
        log(
          `stuck build: failed timeout ${secs(tDone - tRunning)} after it started running; ` +
            `the daemon's RUN process was gone ${secs(tGone - tDone)} after that`,
        );
      },
    );
  });
});
