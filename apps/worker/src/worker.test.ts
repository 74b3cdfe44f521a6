// Integration tests of the worker against real PostgreSQL, Redis and two private Docker daemons.
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { readFile, stat } from 'node:fs/promises';
import path from 'node:path';
import { Readable } from 'node:stream';
import { after, before, describe, test } from 'node:test';
import { CanceledError, connect, SolveError, type SolveOptions } from '@kiln/buildkit-client';
import {
  type BuildJobData,
  BuildLifecycle,
  BuildRepository,
  type BuildSpecInput,
  builderLeaseKey,
  buildJobOptions,
  CHANNEL_CANCEL,
  cancelRequestKey,
  type KilnConfig,
  logKey,
  logStreamKey,
  type ObjectStorage,
  type PrismaClient,
  QUEUE_BUILDS,
  stepsKey,
} from '@kiln/core';
import { Queue, Worker } from 'bullmq';
import { Redis } from 'ioredis';
import {
  type BuildContext,
  busyboxPath,
  makeContext,
} from '../../../packages/buildkit-client/test-support/context.js';
import { dockerBuildTar } from '../../../packages/buildkit-client/test-support/docker.js';
import { startRelay } from '../../../packages/buildkit-client/test-support/relay.js';
import {
  compareTarEntries,
  readTarEntries,
} from '../../../packages/buildkit-client/test-support/tar-entries.js';
import { startBuildkitd } from '../../../test/support/processes.js';
import {
  createBuildRow,
  createTestDatabase,
  createTestStorage,
  downloadTo,
  env,
  readObject,
  sleep,
  testConfig,
  testLogger,
  uploadContext,
  waitForBuild,
} from '../test-support/helpers.js';
import type { DialBuilder } from './builders/clients.js';
import { BuilderPool } from './builders/pool.js';
import { Reconciler } from './reconciler.js';
import { createWorker, type KilnWorker, type WorkerDeps } from './worker.js';

const missing = Object.entries(env)
  .filter(([, v]) => v === '')
  .map(([k]) => k);
const skip = missing.length > 0 ? `needs ${missing.join(', ')} (KILN_TEST_* variables of npm test)` : false;

const D1 = `docker://${env.dockerSock}`;
const D2 = `docker://${env.dockerSock2}`;

// No /bin/sh in FROM scratch (nothing can be pulled): exec form with the static busybox.
const DOCKERFILE = `FROM scratch
COPY busybox /bin/busybox
ARG N=0
RUN ["/bin/busybox", "sh", "-c", "echo hello from RUN $N; /bin/busybox mkdir -p /out; echo built $N > /out/result.txt"]
`;
const SLEEP_DOCKERFILE = (seconds: number) => `FROM scratch
COPY busybox /bin/busybox
ARG N=0
RUN ["/bin/busybox", "sh", "-c", "echo sleeping $N; /bin/busybox sleep ${seconds}; echo woke > /woke"]
`;

const spec = (over: BuildSpecInput = {}): BuildSpecInput => ({
  output: 'type=tar,dest=app.tar',
  network: 'none',
  ...over,
});

describe('KilnWorker', { skip }, () => {
  let db: Awaited<ReturnType<typeof createTestDatabase>>;
  let prisma: PrismaClient;
  let store: Awaited<ReturnType<typeof createTestStorage>>;
  let storage: ObjectStorage;
  let redis: Redis;
  let context: BuildContext;
  let uploaded: { key: string; digest: string; size: number };
  let projectId: string;
  const workers: KilnWorker[] = [];
  const queues: Queue[] = [];

  before(async () => {
    db = await createTestDatabase();
    prisma = db.prisma;
    store = await createTestStorage();
    storage = store.storage;
    redis = new Redis(env.redisUrl);
    context = await makeContext({
      busybox: { content: await readFile(busyboxPath()), mode: 0o755 },
      Dockerfile: DOCKERFILE,
      'bad.Dockerfile': 'FROM scratch\nCOPY busybox /bin/busybox\nFROBNICATE everything\n',
      'docker/sleep.Dockerfile': SLEEP_DOCKERFILE(60),
      'docker/short-sleep.Dockerfile': SLEEP_DOCKERFILE(2),
    });
    uploaded = await uploadContext(storage, context.dir);
    projectId = (await prisma.project.create({ data: { name: `p-${randomBytes(4).toString('hex')}` } })).id;
  });

  after(async () => {
    for (const w of workers) await w.stop(0).catch(() => {});
    for (const q of queues) await q.close().catch(() => {});
    await redis?.quit();
    await db?.drop();
    await store?.cleanup();
    await context?.cleanup();
  });

  /** A worker with its own queue prefix and lease namespace, and a Queue to add jobs to it. */
  async function startWorker(
    over: Partial<KilnConfig> = {},
    deps: WorkerDeps = {},
  ): Promise<{ worker: KilnWorker; queue: Queue<BuildJobData>; prefix: string }> {
    const prefix = deps.queuePrefix ?? `kt-${randomBytes(4).toString('hex')}`;
    const config = testConfig({
      databaseUrl: db.url,
      builders: [
        { address: D1, concurrency: 2 },
        { address: D2, concurrency: 2 },
      ],
      ...over,
    });
    const worker = createWorker(config, {
      prisma,
      storage,
      logger: testLogger(),
      queuePrefix: prefix,
      keyPrefix: prefix,
      reconcileIntervalMs: 0,
      ...deps,
    });
    await worker.start();
    workers.push(worker);
    const queue = new Queue<BuildJobData>(QUEUE_BUILDS, { connection: { url: env.redisUrl }, prefix });
    queues.push(queue);
    return { worker, queue, prefix };
  }

  async function submit(queue: Queue<BuildJobData>, s: BuildSpecInput, attempts = 3) {
    const row = await createBuildRow(prisma, projectId, uploaded, s);
    await queue.add('build', { buildId: row.id }, buildJobOptions(row.id, attempts));
    return row;
  }

  /**
   * The build's live log once its end entry is there (it follows the row's final write, see
   * BuildLifecycle.afterFinal, so a test that saw the row final may read the stream before it).
   */
  async function endedLiveLog(buildId: string, timeoutMs = 10_000) {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const entries = await redis.xrange(logStreamKey(buildId), '-', '+');
      if (entries.at(-1)?.[1][1] === 'end' || Date.now() >= deadline) return entries;
      await sleep(50);
    }
  }

  /** Waits until the build's live log contains `text`. */
  async function waitForLog(buildId: string, text: string, timeoutMs = 30_000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const entries = await redis.xrange(logStreamKey(buildId), '-', '+');
      if (entries.some(([, f]) => String(f[3]).includes(text))) return;
      assert.ok(Date.now() < deadline, `the log of ${buildId} never showed "${text}"`);
      await sleep(100);
    }
  }

  /** The keys stored under `prefix`. */
  async function listed(prefix: string): Promise<string[]> {
    const keys: string[] = [];
    for await (const object of storage.list(prefix)) keys.push(object.key);
    return keys;
  }

  const attemptsOf = (buildId: string) =>
    prisma.buildAttempt.findMany({ where: { buildId }, orderBy: { number: 'asc' } });

  describe('on two builders', () => {
    let main: Awaited<ReturnType<typeof startWorker>>;
    before(async () => {
      main = await startWorker();
    });

    test('builds a tar equal to docker build --output type=tar, with logs', async () => {
      const t0 = Date.now();
      const row = await submit(main.queue, spec());
      const done = await waitForBuild(prisma, row.id);
      assert.equal(done.status, 'succeeded', done.errorMessage ?? '');
      assert.equal(done.attempts, 1);
      assert.ok(done.builder === D1 || done.builder === D2);
      assert.ok(done.startedAt && done.finishedAt);
      assert.equal(done.artifactKey, `artifacts/${row.id}/1/app.tar`);
      assert.equal(done.logKey, logKey(row.id));

      // The artifact: same entries as the docker CLI's export, and size/digest as recorded.
      const ours = path.join(context.dir, `ours-${row.id}.tar`);
      const theirs = path.join(context.dir, `docker-${row.id}.tar`);
      await downloadTo(storage, done.artifactKey ?? '', ours);
      await dockerBuildTar({ socket: env.dockerSock, contextDir: context.dir, dest: theirs });
      const [a, b] = [await readTarEntries(ours), await readTarEntries(theirs)];
      assert.deepEqual(compareTarEntries(a, b), []);
      assert.ok(a.some((e) => e.name === 'out/result.txt'));
      assert.equal(Number(done.artifactSize), (await stat(ours)).size);
      assert.equal(
        done.artifactDigest,
        `sha256:${createHash('sha256')
          .update(await readFile(ours))
          .digest('hex')}`,
      );

      // The live log stream: RUN output, then the end entry; it expires.
      const entries = await endedLiveLog(row.id);
      const fields = entries.map(([, f]) =>
        Object.fromEntries([
          [f[0], f[1]],
          [f[2], f[3]],
        ]),
      );
      const text = fields
        .filter((f) => f.k === 'log')
        .map((f) => f.d)
        .join('');
      assert.match(text, /hello from RUN 0/);
      assert.match(text, /RUN \["\/bin\/busybox"/);
      assert.deepEqual(fields.at(-1), { k: 'end', d: 'succeeded' });
      assert.ok((await redis.ttl(logStreamKey(row.id))) > 3600);
      // The stored log has the same text.
      const stored = await readObject(storage, logKey(row.id));
      assert.equal(stored, text);

      const attempts = await attemptsOf(row.id);
      assert.equal(attempts.length, 1);
      assert.equal(attempts[0]?.outcome, 'succeeded');
      assert.equal(attempts[0]?.builder, done.builder);
      // Lease released; affinity remembered.
      assert.equal(await redis.zcard(`${main.prefix}:leases:${done.builder}`), 0);
      assert.equal(await redis.get(`${main.prefix}:affinity:${projectId}`), done.builder);
      process.stdout.write(`# build + checks: ${Date.now() - t0} ms\n`);
    });

    test('a Dockerfile error fails the build with BuildKit’s message, without retry', async () => {
      const row = await submit(main.queue, spec({ file: 'bad.Dockerfile' }));
      const done = await waitForBuild(prisma, row.id);
      assert.equal(done.status, 'failed');
      assert.equal(done.errorCode, 'build_failed');
      assert.match(done.errorMessage ?? '', /line 3/);
      assert.match(done.errorMessage ?? '', /unknown instruction/i);
      assert.equal(done.attempts, 1);
      const attempts = await attemptsOf(row.id);
      assert.equal(attempts.length, 1);
      assert.equal(attempts[0]?.outcome, 'failed');
      assert.equal(attempts[0]?.errorCode, 'build_failed');
      // BullMQ: failed for good after one attempt.
      await sleep(200);
      const job = await main.queue.getJob(row.id);
      assert.equal(await job?.getState(), 'failed');
      assert.equal(job?.attemptsMade, 1);
      const log = await readObject(storage, logKey(row.id));
      assert.match(log, /ERROR: .*unknown instruction/i);
    });

    test('a failing RUN step fails the build with its exit code', async () => {
      const ctx = await makeContext({
        busybox: { content: await readFile(busyboxPath()), mode: 0o755 },
        Dockerfile:
          'FROM scratch\nCOPY busybox /bin/busybox\nRUN ["/bin/busybox", "sh", "-c", "echo oops >&2; exit 3"]\n',
      });
      try {
        const up = await uploadContext(storage, ctx.dir);
        const row = await createBuildRow(prisma, projectId, up, spec());
        await main.queue.add('build', { buildId: row.id }, buildJobOptions(row.id, 3));
        const done = await waitForBuild(prisma, row.id);
        assert.equal(done.status, 'failed');
        assert.equal(done.errorCode, 'build_failed');
        assert.match(done.errorMessage ?? '', /exit code: 3/);
        assert.equal(done.attempts, 1);
        assert.match(await readObject(storage, logKey(row.id)), /oops/);
      } finally {
        await ctx.cleanup();
      }
    });

    test('a cancel published during a RUN step cancels the build', async () => {
      const row = await submit(
        main.queue,
        spec({ file: 'docker/sleep.Dockerfile', buildArgs: { N: freshArg() } }),
      );
      await waitForLog(row.id, 'sleeping');
      const t0 = Date.now();
      await redis.publish(CHANNEL_CANCEL, row.id);
      const done = await waitForBuild(prisma, row.id, 20_000);
      assert.equal(done.status, 'canceled');
      assert.ok(Date.now() - t0 < 10_000, `cancel took ${Date.now() - t0} ms`);
      const attempts = await attemptsOf(row.id);
      assert.equal(attempts[0]?.outcome, 'canceled');
      const entries = await endedLiveLog(row.id);
      assert.deepEqual(entries.at(-1)?.[1], ['k', 'end', 'd', 'canceled']);
      assert.equal(done.artifactKey, null);
      assert.deepEqual(await listed(`artifacts/${row.id}/`), []);
    });

    test('a cancel asked while the worker heard no message (its subscriber away) is found while the build runs', async () => {
      const row = await submit(
        main.queue,
        spec({ file: 'docker/sleep.Dockerfile', buildArgs: { N: freshArg() } }),
      );
      await waitForLog(row.id, 'sleeping');
      // What the API keeps for a running build; the message it publishes reaches nobody here.
      await redis.set(cancelRequestKey(row.id), '1', 'EX', 600);
      const done = await waitForBuild(prisma, row.id, 30_000);
      assert.equal(done.status, 'canceled', done.errorMessage ?? '');
    });

    test('a local output fails with a clear message', async () => {
      const row = await submit(main.queue, spec({ output: 'type=local,dest=out' }));
      const done = await waitForBuild(prisma, row.id);
      assert.equal(done.status, 'failed');
      assert.equal(done.errorCode, 'unsupported_output');
      assert.match(done.errorMessage ?? '', /output type "local" is not supported yet: use type=tar/);
      assert.equal(done.attempts, 0);
    });

    test('the reconciler re-enqueues a queued build whose job is missing', async () => {
      const row = await createBuildRow(prisma, projectId, uploaded, spec(), {
        createdAt: new Date(Date.now() - 60_000),
      });
      assert.equal(await main.queue.getJob(row.id), undefined);
      const report = await main.worker.reconciler.runOnce();
      assert.deepEqual(report.requeued, [row.id]);
      const done = await waitForBuild(prisma, row.id);
      assert.equal(done.status, 'succeeded', done.errorMessage ?? '');
      // A second pass finds nothing to do.
      const again = await main.worker.reconciler.runOnce();
      assert.deepEqual(again, { requeued: [], recovered: [], failed: [] });
    });

    test('the reconciler leaves a queued build alone while the API still stores its context', async () => {
      // The API inserted the row a minute ago and is still storing a large context.
      const pending = { ...uploaded, key: `contexts/sha256/${randomBytes(32).toString('hex')}.tar` };
      const row = await createBuildRow(prisma, projectId, pending, spec(), {
        createdAt: new Date(Date.now() - 60_000),
      });
      assert.deepEqual((await main.worker.reconciler.runOnce()).requeued, []);
      assert.equal(await main.queue.getJob(row.id), undefined);
      // Stored: the API would enqueue it now; should that enqueue be lost, the reconciler does it.
      const { body } = await storage.get(uploaded.key);
      await storage.put(pending.key, body);
      assert.deepEqual((await main.worker.reconciler.runOnce()).requeued, [row.id]);
      const done = await waitForBuild(prisma, row.id);
      assert.equal(done.status, 'succeeded', done.errorMessage ?? '');
      // A row older than the API could take: enqueued, and its worker says what is missing.
      const abandoned = await createBuildRow(
        prisma,
        projectId,
        { ...uploaded, key: `contexts/sha256/${randomBytes(32).toString('hex')}.tar` },
        spec(),
        { createdAt: new Date(Date.now() - 20 * 60_000) },
      );
      assert.deepEqual((await main.worker.reconciler.runOnce()).requeued, [abandoned.id]);
      const missing = await waitForBuild(prisma, abandoned.id);
      assert.equal(missing.errorCode, 'context_missing', missing.errorMessage ?? '');
    });

    /** A build whose attempt 1 is running on D1 (as far as the database knows). */
    async function runningOnD1() {
      const row = await createBuildRow(prisma, projectId, uploaded, spec(), {
        status: 'running',
        builder: D1,
        attempts: 1,
        createdAt: new Date(Date.now() - 60_000),
      });
      await prisma.buildAttempt.create({ data: { buildId: row.id, number: 1, builder: D1 } });
      return row;
    }

    /** A pool over D1 in the main worker's lease namespace. */
    const d1Pool = (leaseTtlMs?: number) =>
      new BuilderPool({
        builders: [{ address: D1, concurrency: 2 }],
        redis,
        logger: testLogger(),
        keyPrefix: main.prefix,
        ...(leaseTtlMs ? { leaseTtlMs } : {}),
        healthIntervalMs: 0,
      });

    /** A reconciler over D1 whose lease TTL is short, so the tests do not wait 30 s. */
    const shortTtlReconciler = () => {
      const pool = d1Pool(300);
      const lifecycle = new BuildLifecycle({
        repo: new BuildRepository(prisma),
        redis,
        logger: testLogger(),
      });
      const reconciler = new Reconciler({
        lifecycle,
        queue: main.queue,
        pool,
        logger: testLogger(),
        attempts: 3,
        intervalMs: 0,
        storage,
      });
      return { pool, lifecycle, reconciler };
    };

    /** Two passes past the TTL: the build whose worker vanished goes back to the queue. */
    async function recoverVanished(id: string) {
      const { pool, reconciler } = shortTtlReconciler();
      try {
        assert.deepEqual((await reconciler.runOnce()).recovered, []); // first seen without a lease
        await sleep(400);
        assert.deepEqual((await reconciler.runOnce()).recovered, [id]);
      } finally {
        await pool.close();
      }
    }

    test('the reconciler recovers a running build whose worker vanished', async () => {
      const row = await runningOnD1();
      await recoverVanished(row.id);
      const done = await waitForBuild(prisma, row.id);
      assert.equal(done.status, 'succeeded', done.errorMessage ?? '');
      const attempts = await attemptsOf(row.id);
      assert.deepEqual(
        attempts.map((a) => a.outcome),
        ['lost', 'succeeded'],
      );
    });

    test('a cancel asked while nobody ran the build (its worker died) is found by its next attempt', async () => {
      const row = await runningOnD1();
      // As the API does for a running build: the request kept, then the message, which no worker hears.
      await redis.set(cancelRequestKey(row.id), '1', 'EX', 600);
      await recoverVanished(row.id);
      const done = await waitForBuild(prisma, row.id);
      assert.equal(done.status, 'canceled', done.errorMessage ?? '');
      assert.equal(done.attempts, 1, 'no attempt started');
      assert.equal(await redis.exists(cancelRequestKey(row.id)), 0, 'the request goes with the final state');
    });

    test('a lease found long expired (as after Redis was away) is timed from then: its worker renewing meanwhile keeps the build', async () => {
      const row = await runningOnD1();
      const { pool, lifecycle, reconciler } = shortTtlReconciler();
      try {
        // The worker's lease, last renewed a minute ago: Redis was away since.
        const key = pool.leaseKey(D1);
        await redis.zadd(key, Number(await pool.now()) - 60_000, row.id);
        const first = await reconciler.runOnce();
        assert.deepEqual([first.recovered, first.failed], [[], []]);
        // The worker renews; the next pass, past the TTL, leaves the build alone.
        await sleep(400);
        await redis.zadd(key, Number(await pool.now()) + 300, row.id);
        const report = await reconciler.runOnce();
        assert.deepEqual([report.recovered, report.failed], [[], []]);
        const still = await prisma.build.findUniqueOrThrow({ where: { id: row.id } });
        assert.deepEqual([still.status, still.attempts], ['running', 1]);
      } finally {
        await redis.zrem(pool.leaseKey(D1), row.id);
        await pool.close();
        await lifecycle.cancel(row.id, 'test over');
      }
    });

    test('a second job for a build whose attempt holds a live lease does nothing; once the lease is gone, a job takes it over', async () => {
      const row = await runningOnD1();
      // The attempt "running elsewhere": a live lease on its builder, renewing itself.
      const pool = d1Pool();
      try {
        const lease = await pool.acquire({ buildId: row.id });
        assert.equal(lease.address, D1);
        const job = await main.queue.add('build', { buildId: row.id }, buildJobOptions(`${row.id}-dup`, 3));
        for (let i = 0; (await job.getState()) !== 'completed'; i++) {
          assert.ok(i < 300, `the duplicate job is ${await job.getState()}`);
          await sleep(100);
        }
        const unchanged = await prisma.build.findUniqueOrThrow({ where: { id: row.id } });
        assert.deepEqual([unchanged.status, unchanged.attempts], ['running', 1], 'not run a second time');
        assert.equal((await attemptsOf(row.id)).length, 1);
        // That worker is gone (its lease with it): the next job runs the build.
        await lease.release();
        await main.queue.add('build', { buildId: row.id }, buildJobOptions(row.id, 3));
        const done = await waitForBuild(prisma, row.id);
        assert.equal(done.status, 'succeeded', done.errorMessage ?? '');
        assert.deepEqual(
          (await attemptsOf(row.id)).map((a) => a.outcome),
          ['lost', 'succeeded'],
        );
      } finally {
        await pool.close();
      }
    });
  });

  test('an unreachable builder: the attempt fails and the retry succeeds on the other builder', async () => {
    const bogus = `unix:///tmp/kiln-no-such-${randomBytes(4).toString('hex')}.sock`;
    const { worker, queue } = await startWorker(
      {
        builders: [
          { address: bogus, concurrency: 4 },
          { address: D2, concurrency: 4 },
        ],
      },
      // Health unknown at first, so the first attempt really goes to the bogus builder.
      { initialHealthCheck: false, healthIntervalMs: 0 },
    );
    const row = await submit(queue, spec());
    const done = await waitForBuild(prisma, row.id);
    assert.equal(done.status, 'succeeded', done.errorMessage ?? '');
    assert.equal(done.builder, D2);
    assert.equal(done.attempts, 2);
    const attempts = await attemptsOf(row.id);
    assert.deepEqual(
      attempts.map((a) => [a.number, a.builder, a.outcome, a.errorCode]),
      [
        [1, bogus, 'failed', 'infrastructure'],
        [2, D2, 'succeeded', null],
      ],
    );
    assert.match(attempts[0]?.errorMessage ?? '', /does not exist/);

    // Once checked, the bogus builder is skipped right away.
    await worker.pool.checkAll();
    const status = await worker.pool.status();
    assert.equal(status.find((s) => s.address === bogus)?.healthy, false);
    const second = await submit(queue, spec({ buildArgs: { N: freshArg() } }));
    const done2 = await waitForBuild(prisma, second.id);
    assert.equal(done2.status, 'succeeded', done2.errorMessage ?? '');
    assert.equal(done2.attempts, 1);
    await worker.stop();
  });

  test('a builder lost mid-build: the build is retried on the other builder', async () => {
    // A unix-socket relay to the first daemon stands in for a standalone buildkitd we can kill.
    const relay = await startRelay(env.dockerSock, {
      unixPath: `/tmp/kiln-wk-relay-${randomBytes(4).toString('hex')}.sock`,
    });
    let relayOpen = true;
    try {
      const { worker, queue } = await startWorker({
        builders: [
          { address: relay.address, concurrency: 4 },
          { address: D2, concurrency: 4 },
        ],
      });
      const row = await submit(
        queue,
        spec({ file: 'docker/short-sleep.Dockerfile', buildArgs: { N: freshArg() } }),
      );
      await waitForLog(row.id, 'sleeping');
      const first = await prisma.build.findUniqueOrThrow({ where: { id: row.id } });
      assert.equal(first.builder, relay.address);
      await relay.close();
      relayOpen = false;
      const done = await waitForBuild(prisma, row.id, 30_000);
      assert.equal(done.status, 'succeeded', done.errorMessage ?? '');
      assert.equal(done.builder, D2);
      const attempts = await attemptsOf(row.id);
      assert.deepEqual(
        attempts.map((a) => [a.builder, a.outcome, a.errorCode]),
        [
          [relay.address, 'failed', 'infrastructure'],
          [D2, 'succeeded', null],
        ],
      );
      const log = await readObject(storage, logKey(row.id));
      assert.match(log, /attempt 2 on/);
      await worker.stop();
    } finally {
      if (relayOpen) await relay.close();
    }
  });

  test('a builder whose connections are reset mid-build on every attempt: the attempts are used up, then the build fails', async () => {
    // A daemon killed mid-build leaves ECONNRESET in the error's causes, which once read as
    // PostgreSQL being away: the job went back uncounted, again and again, and never gave up.
    const relay = await startRelay(env.dockerSock, { tcp: true });
    try {
      const { worker, queue } = await startWorker({ builders: [{ address: relay.address, concurrency: 1 }] });
      const n = freshArg();
      const row = await submit(queue, spec({ file: 'docker/sleep.Dockerfile', buildArgs: { N: n } }), 2);
      // The RUN's own output (its step line shows `echo sleeping $N`, unexpanded).
      const started = new RegExp(`sleeping ${n}\\b`, 'g');
      const deadline = Date.now() + 90_000;
      let resets = 0;
      for (;;) {
        const b = await prisma.build.findUniqueOrThrow({ where: { id: row.id } });
        if (b.status === 'failed' || b.status === 'succeeded') break;
        assert.ok(Date.now() < deadline, `still ${b.status} at attempt ${b.attempts} after ${resets} resets`);
        const entries = await redis.xrange(logStreamKey(row.id), '-', '+');
        const runs =
          entries
            .map(([, f]) => String(f[3]))
            .join('')
            .match(started)?.length ?? 0;
        if (runs > resets) {
          relay.reset();
          resets++;
        }
        await sleep(100);
      }
      const done = await prisma.build.findUniqueOrThrow({ where: { id: row.id } });
      assert.equal(done.status, 'failed');
      assert.equal(done.errorCode, 'infrastructure');
      assert.match(done.errorMessage ?? '', /gave up after 2 attempts/);
      const attempts = await attemptsOf(row.id);
      assert.deepEqual(
        attempts.map((a) => [a.number, a.outcome, a.errorCode]),
        [
          [1, 'failed', 'infrastructure'],
          [2, 'failed', 'infrastructure'],
        ],
      );
      await worker.stop();
    } finally {
      await relay.close();
    }
  });

  test('no reachable builder: attempts are used up, the build fails with no_builder_available', async () => {
    const bogus = `unix:///tmp/kiln-no-such-${randomBytes(4).toString('hex')}.sock`;
    const { worker, queue } = await startWorker({ builders: [{ address: bogus, concurrency: 1 }] });
    const row = await createBuildRow(prisma, projectId, uploaded, spec());
    // Two attempts, the second after BullMQ's 2 s backoff.
    await queue.add('build', { buildId: row.id }, buildJobOptions(row.id, 2));
    const done = await waitForBuild(prisma, row.id, 20_000);
    assert.equal(done.status, 'failed');
    assert.equal(done.errorCode, 'no_builder_available');
    assert.match(done.errorMessage ?? '', /no healthy builder.*does not exist.*gave up after 2 attempts/);
    const entries = await endedLiveLog(row.id);
    assert.deepEqual(entries.at(-1)?.[1], ['k', 'end', 'd', 'failed']);
    await worker.stop();
  });

  test('the build timeout aborts the solve', async () => {
    const { worker, queue } = await startWorker({ buildTimeoutSeconds: 3 });
    const row = await submit(queue, spec({ file: 'docker/sleep.Dockerfile', buildArgs: { N: freshArg() } }));
    const done = await waitForBuild(prisma, row.id, 30_000);
    assert.equal(done.status, 'failed');
    assert.equal(done.errorCode, 'timeout');
    assert.match(done.errorMessage ?? '', /time limit of 3 s/);
    assert.equal(done.attempts, 1);
    await worker.stop();
  });

  /**
   * A standalone buildkitd frozen (SIGSTOP) in a RUN step under a worker configured by `over`:
   * attempt 1 fails as infrastructure with a message matching `why`, and the retry finds no
   * healthy builder.
   */
  async function frozenMidRun(over: Partial<KilnConfig>, why: RegExp): Promise<void> {
    const daemon = await startBuildkitd();
    try {
      const { worker, queue } = await startWorker({
        ...over,
        builders: [{ address: daemon.address, concurrency: 1 }],
      });
      const n = freshArg();
      const row = await submit(queue, spec({ file: 'docker/sleep.Dockerfile', buildArgs: { N: n } }), 2);
      await waitForLog(row.id, `sleeping ${n}`, 60_000);
      await daemon.freeze();
      const done = await waitForBuild(prisma, row.id, 60_000);
      const attempts = await attemptsOf(row.id);
      assert.deepEqual(
        attempts.map((a) => [a.number, a.outcome, a.errorCode]),
        [[1, 'failed', 'infrastructure']],
      );
      assert.match(attempts[0]?.errorMessage ?? '', why);
      // The frozen builder is unhealthy, so the second attempt found none.
      assert.equal(done.status, 'failed');
      assert.equal(done.errorCode, 'no_builder_available');
      await worker.stop();
    } finally {
      await daemon.thaw();
      await daemon.cleanup();
    }
  }

  test("a builder that hangs mid-build: the timeout is its failure, not the build's", () =>
    frozenMidRun({ buildTimeoutSeconds: 4 }, /stopped answering during the build \(.*time limit of 4 s/));

  test('a builder that stops answering mid-build is dropped at its first unanswered keepalive PING, not at the build timeout', () =>
    // The wait for the build is bounded far below its 600 s timeout, which it would wait for
    // without keepalive. Go gRPC sends GOAWAY after 3 pings closer than 5 min with nothing sent
    // between them: 2 s leaves ~6 s of quiet before the freeze, which follows the RUN's first line.
    frozenMidRun(
      { buildTimeoutSeconds: 600, builderKeepaliveSeconds: 2 },
      /did not answer an HTTP\/2 PING within 2000 ms/,
    ));

  /** Dials the real client, whose every solve runs `then` once BuildKit's solve returned. */
  const afterSolve =
    (then: (opts: SolveOptions) => Promise<void>): DialBuilder =>
    async (address, timeoutMs, tls) => {
      const client = await connect(address, { timeoutMs, ...(tls ? { tls } : {}) });
      const solve = client.solve.bind(client);
      client.solve = async (opts, onStatus) => {
        const result = await solve(opts, onStatus);
        await then(opts);
        return result;
      };
      return client;
    };

  test('a build canceled after its export was stored keeps nothing stored', async () => {
    // The solve sees a cancel after the export completed, as one arriving while BuildKit still
    // exports the cache does.
    let target = '';
    let stored = false;
    const connectBuilder = afterSolve(async ({ signal }) => {
      // The solve returns once the export stream ended; storage finishes its put a moment later.
      for (const deadline = Date.now() + 10_000; !stored && Date.now() < deadline; await sleep(20))
        stored = (await listed(`artifacts/${target}/`)).length > 0;
      await redis.publish(CHANNEL_CANCEL, target);
      if (signal && !signal.aborted)
        await new Promise((resolve) => signal.addEventListener('abort', resolve, { once: true }));
      throw new CanceledError();
    });
    const { worker, queue } = await startWorker({}, { connectBuilder });
    const row = await submit(queue, spec({ buildArgs: { N: freshArg() } }));
    target = row.id;
    const done = await waitForBuild(prisma, row.id, 60_000);
    assert.ok(stored, 'the artifact was stored before the cancel');
    assert.equal(done.status, 'canceled', done.errorMessage ?? '');
    assert.equal(done.artifactKey, null);
    assert.deepEqual(await listed(`artifacts/${row.id}/`), []);
    await worker.stop();
  });

  test('a solve answered without the export fails the attempt, not the build: retried, never an empty artifact', async () => {
    // The first solve is answered as by a daemon that ignored the exporter: OK, nothing sent.
    let solves = 0;
    const connectBuilder: DialBuilder = async (address, timeoutMs, tls) => {
      const client = await connect(address, { timeoutMs, ...(tls ? { tls } : {}) });
      const solve = client.solve.bind(client);
      client.solve = async (opts, onStatus) =>
        ++solves === 1 ? { ref: 'r', exporterResponse: {} } : solve(opts, onStatus);
      return client;
    };
    const { worker, queue } = await startWorker({}, { connectBuilder });
    const row = await submit(queue, spec({ buildArgs: { N: freshArg() } }));
    const done = await waitForBuild(prisma, row.id, 60_000);
    assert.equal(done.status, 'succeeded', done.errorMessage ?? '');
    assert.ok(Number(done.artifactSize) > 0);
    const [first] = await attemptsOf(row.id);
    assert.equal(first?.errorCode, 'infrastructure');
    assert.match(first?.errorMessage ?? '', /finished the build without exporting it/);
    assert.deepEqual(await listed(`artifacts/${row.id}/1/`), []);
    await worker.stop();
  });

  /**
   * What the reconciler and a second worker do to a worker cut off from Redis: once attempt 1's
   * solve returned, the row moves to attempt 2 on D2, then `then` runs; attempt 1 runs to its
   * end. Returns the build's row once attempt 1's job ended, and the worker (to stop).
   */
  async function takenOverAfterSolve(then: (buildId: string) => Promise<void>) {
    let target = '';
    const connectBuilder = afterSolve(async () => {
      await prisma.build.update({ where: { id: target }, data: { attempts: 2, builder: D2 } });
      await prisma.buildAttempt.create({ data: { buildId: target, number: 2, builder: D2 } });
      await then(target);
    });
    const { worker, queue } = await startWorker({}, { connectBuilder });
    const row = await submit(queue, spec({ buildArgs: { N: freshArg() } }));
    target = row.id;
    for (const deadline = Date.now() + 60_000; !(await queue.getJob(row.id))?.finishedOn; await sleep(100))
      assert.ok(Date.now() < deadline, 'attempt 1 never ended');
    const build = await prisma.build.findUniqueOrThrow({ where: { id: row.id } });
    assert.equal(build.status, 'running', `${build.errorCode}: ${build.errorMessage}`);
    assert.equal(build.attempts, 2);
    return { build, worker };
  }

  test('an attempt finishing after another worker started the build again neither succeeds it nor touches its artifact, log or steps', async () => {
    // Attempt 2's artifact is being written, and its log and steps stored, while attempt 1
    // stores its own and ends.
    const second = (id: string) => `artifacts/${id}/2/app.tar`;
    const { build, worker } = await takenOverAfterSolve(async (id) => {
      await storage.put(second(id), Readable.from([Buffer.from('attempt 2')]));
      await storage.put(logKey(id), Readable.from([Buffer.from('attempt 2 log')]));
      await storage.put(stepsKey(id), Readable.from([Buffer.from('attempt 2 steps')]));
    });
    assert.equal(build.artifactKey, null);
    // Attempt 1 removed only its own artifact.
    assert.deepEqual(await listed(`artifacts/${build.id}/`), [second(build.id)]);
    assert.equal(await readObject(storage, second(build.id)), 'attempt 2');
    assert.equal(await readObject(storage, logKey(build.id)), 'attempt 2 log');
    assert.equal(await readObject(storage, stepsKey(build.id)), 'attempt 2 steps');
    await worker.stop();
  });

  test('an attempt failing after another worker started the build again does not fail it', async () => {
    // Attempt 1 ends in a build error: its final write must not end attempt 2's build.
    const { build, worker } = await takenOverAfterSolve(async () => {
      throw new SolveError('a RUN step failed', undefined, 'exit code: 1');
    });
    assert.equal(build.errorCode, null);
    const [, second] = await attemptsOf(build.id);
    assert.equal(second?.outcome, null, 'attempt 2 is still running');
    await worker.stop();
  });

  test('a run cut off for a lease TTL, its build started again elsewhere meanwhile, stops its solve and frees its builder', async () => {
    const { worker, queue, prefix } = await startWorker({}, { leaseTtlMs: 600 });
    const row = await submit(queue, spec({ file: 'docker/sleep.Dockerfile', buildArgs: { N: freshArg() } }));
    await waitForLog(row.id, 'sleeping');
    const builder = (await prisma.build.findUniqueOrThrow({ where: { id: row.id } })).builder ?? '';
    const other = builder === D1 ? D2 : D1;
    // What the run finds when it renews again: its lease expired, and the reconciler and another
    // worker have started attempt 2 on the other builder.
    await prisma.build.update({ where: { id: row.id }, data: { attempts: 2, builder: other } });
    await prisma.buildAttempt.create({ data: { buildId: row.id, number: 2, builder: other } });
    await redis.zadd(builderLeaseKey(builder, prefix), 1, row.id);
    await redis.del(`${prefix}:lease-holder:${builder}:${row.id}`);
    const job = await queue.getJob(row.id);
    for (const deadline = Date.now() + 30_000; (await job?.getState()) !== 'completed'; await sleep(100))
      assert.ok(Date.now() < deadline, 'the first run never stopped (its RUN sleeps 60 s)');
    const build = await prisma.build.findUniqueOrThrow({ where: { id: row.id } });
    assert.deepEqual([build.status, build.attempts, build.builder], ['running', 2, other]);
    const [, second] = await attemptsOf(row.id);
    assert.equal(second?.outcome, null, 'attempt 2 is still running');
    assert.equal(await redis.zscore(builderLeaseKey(builder, prefix), row.id), null, 'its slot is free');
    await worker.stop();
  });

  /** A queued build whose job processes took and died with twice: one stall more than BullMQ's limit. */
  async function stalledTwice() {
    const prefix = `kt-${randomBytes(4).toString('hex')}`;
    const queue = new Queue<BuildJobData>(QUEUE_BUILDS, { connection: { url: env.redisUrl }, prefix });
    queues.push(queue);
    const row = await submit(queue, spec());
    // Their lock expires, and BullMQ's stalled check puts the job back.
    const dying = new Worker<BuildJobData>(QUEUE_BUILDS, null, {
      connection: { url: env.redisUrl },
      prefix,
      autorun: false,
      lockDuration: 300,
      stalledInterval: 300,
    });
    try {
      void dying.startStalledCheckTimer();
      for (let stall = 1; stall <= 2; stall++) {
        const job = await dying.getNextJob(`dead-${stall}`);
        assert.equal(job?.id, row.id);
        for (
          const deadline = Date.now() + 20_000;
          (await queue.getJob(row.id))?.stalledCounter !== stall;
          await sleep(100)
        )
          assert.ok(Date.now() < deadline, `stall ${stall} never counted`);
      }
    } finally {
      await dying.close();
    }
    return { prefix, queue, row };
  }

  test('a job BullMQ gives up on for stalling too often fails its build', async () => {
    const { prefix, row } = await stalledTwice();
    // The next worker to take it fails it at once, without running it.
    const { worker } = await startWorker({}, { queuePrefix: prefix });
    const done = await waitForBuild(prisma, row.id, 20_000);
    assert.deepEqual([done.status, done.errorCode], ['failed', 'infrastructure']);
    assert.match(done.errorMessage ?? '', /stalled more than allowable limit/);
    await worker.stop();
  });

  test('a job BullMQ gives up on leaves its build to the run that holds it (a worker that stalled but lives)', async () => {
    const { prefix, queue, row } = await stalledTwice();
    // That worker's attempt: the row running on D1, its lease live and renewed.
    await prisma.build.update({
      where: { id: row.id },
      data: { status: 'running', attempts: 1, builder: D1 },
    });
    const pool = new BuilderPool({
      builders: [{ address: D1, concurrency: 2 }],
      redis,
      logger: testLogger(),
      keyPrefix: prefix,
      healthIntervalMs: 0,
    });
    const lease = await pool.acquire({ buildId: row.id });
    try {
      const { worker } = await startWorker({}, { queuePrefix: prefix });
      const job = await queue.getJob(row.id);
      for (const deadline = Date.now() + 20_000; (await job?.getState()) !== 'failed'; await sleep(100))
        assert.ok(Date.now() < deadline, `the job is ${await job?.getState()}`);
      await sleep(500); // onFailed runs after the job is failed
      const still = await prisma.build.findUniqueOrThrow({ where: { id: row.id } });
      assert.deepEqual([still.status, still.attempts], ['running', 1]);
      await worker.stop();
    } finally {
      await lease.release();
      await pool.close();
    }
  });

  test('six builds over two builders of concurrency 1 all succeed, on both builders', async () => {
    const { worker, queue, prefix } = await startWorker(
      {
        builders: [
          { address: D1, concurrency: 1 },
          { address: D2, concurrency: 1 },
        ],
        workerConcurrency: 4,
      },
      { handBackDelayMs: 300 },
    );
    const t0 = Date.now();
    const rows = [];
    for (let i = 0; i < 6; i++) {
      rows.push(
        await submit(queue, spec({ file: 'docker/short-sleep.Dockerfile', buildArgs: { N: freshArg() } })),
      );
    }
    // Never more than one build per builder at a time.
    let maxLoad = 0;
    const sampler = setInterval(() => {
      void Promise.all([redis.zcard(`${prefix}:leases:${D1}`), redis.zcard(`${prefix}:leases:${D2}`)]).then(
        ([a, b]) => {
          maxLoad = Math.max(maxLoad, a, b);
        },
      );
    }, 50);
    const done = [];
    try {
      for (const row of rows) done.push(await waitForBuild(prisma, row.id, 90_000));
    } finally {
      clearInterval(sampler);
    }
    for (const d of done) {
      assert.equal(d.status, 'succeeded', d.errorMessage ?? '');
      assert.equal(d.attempts, 1);
    }
    assert.deepEqual(new Set(done.map((d) => d.builder)), new Set([D1, D2]));
    assert.equal(maxLoad, 1);
    process.stdout.write(`# 6 builds (2 s RUN each) on 2 builders: ${Date.now() - t0} ms\n`);
    await worker.stop();
  });

  test('a freed slot wakes the build waiting for it at once, not when its hand-back delay ends', async () => {
    // A 30-60 s hand-back delay: without the wake-up the second build would start that late.
    const { worker, queue, prefix } = await startWorker(
      { builders: [{ address: D1, concurrency: 1 }], workerConcurrency: 2 },
      { handBackDelayMs: 30_000 },
    );
    const first = await submit(
      queue,
      spec({ file: 'docker/short-sleep.Dockerfile', buildArgs: { N: freshArg() } }),
    );
    await waitForBuild(prisma, first.id, 30_000, (b) => b.status === 'running');
    const second = await submit(
      queue,
      spec({ file: 'docker/short-sleep.Dockerfile', buildArgs: { N: freshArg() } }),
    );
    // It found the builder full, stands first in its line and waits, delayed.
    for (const deadline = Date.now() + 20_000; ; await sleep(100)) {
      const job = await queue.getJob(second.id);
      if ((await job?.isDelayed()) && (await redis.zscore(`${prefix}:slot-line:${D1}`, second.id)) !== null)
        break;
      assert.ok(Date.now() < deadline, 'the second build never waited in line');
    }
    const done1 = await waitForBuild(prisma, first.id, 60_000);
    const done2 = await waitForBuild(prisma, second.id, 60_000);
    assert.equal(done1.status, 'succeeded', done1.errorMessage ?? '');
    assert.equal(done2.status, 'succeeded', done2.errorMessage ?? '');
    assert.equal(done2.attempts, 1);
    const gapMs =
      (done2.startedAt?.getTime() ?? Number.POSITIVE_INFINITY) - (done1.finishedAt?.getTime() ?? 0);
    process.stdout.write(`# slot freed → waiting build running: ${gapMs} ms\n`);
    assert.ok(gapMs < 10_000, `the waiting build started ${gapMs} ms after the slot freed`);
    await worker.stop();
  });

  test('stop() hands running builds back; another worker finishes them', async () => {
    const first = await startWorker({}, { shutdownGraceMs: 300 });
    const row = await submit(
      first.queue,
      spec({ file: 'docker/short-sleep.Dockerfile', buildArgs: { N: freshArg() } }),
    );
    await waitForBuild(prisma, row.id, 30_000, (b) => b.status === 'running');
    await sleep(500);
    await first.worker.stop();
    const back = await prisma.build.findUniqueOrThrow({ where: { id: row.id } });
    assert.equal(back.status, 'queued');
    const attempts = await attemptsOf(row.id);
    assert.equal(attempts[0]?.outcome, 'lost');
    const job = await first.queue.getJob(row.id);
    assert.ok(['delayed', 'waiting'].includes(await (job?.getState() ?? 'missing')));
    assert.equal(job?.attemptsMade, 0);

    await startWorker({}, { queuePrefix: first.prefix });
    const done = await waitForBuild(prisma, row.id, 30_000);
    assert.equal(done.status, 'succeeded', done.errorMessage ?? '');
    assert.equal(done.attempts, 2);
  });
});

let counter = 0;
/** A fresh build-arg value, so RUN steps are not answered from BuildKit's cache. */
function freshArg(): string {
  counter += 1;
  return `${Date.now()}-${counter}`;
}
