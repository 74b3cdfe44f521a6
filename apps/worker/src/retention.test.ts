// Retention against real PostgreSQL and Redis, with local storage: which builds expire, which
// objects go, a shared artifact outliving its source, the locks it takes, and the schedule.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { Readable } from 'node:stream';
import { after, before, describe, test } from 'node:test';
import {
  type Build,
  BuildLifecycle,
  BuildRepository,
  contextKey,
  lockContextObject,
  logKey,
  type ObjectStorage,
  type PrismaClient,
  parseBuildSpec,
  stepsKey,
} from '@kiln/core';
import { Redis } from 'ioredis';
import {
  createTestDatabase,
  createTestStorage,
  env,
  sleep,
  testConfig,
  testLogger,
  waitForBuild,
} from '../test-support/helpers.js';
import { type RetentionOptions, runRetentionOnce } from './retention.js';
import { RetentionSchedule } from './retention-schedule.js';
import { createWorker, type KilnWorker } from './worker.js';

const missing = ['databaseUrl', 'redisUrl'].filter((k) => env[k as keyof typeof env] === '');
const skip = missing.length > 0 ? `needs ${missing.join(', ')} (KILN_TEST_* variables of npm test)` : false;

const DAY = 24 * 3600 * 1000;
const daysAgo = (now: Date, days: number) => new Date(now.getTime() - days * DAY);

describe('retention', { skip }, () => {
  let db: Awaited<ReturnType<typeof createTestDatabase>>;
  let prisma: PrismaClient;
  let lifecycle: BuildLifecycle;
  let redis: Redis;
  let store: Awaited<ReturnType<typeof createTestStorage>>;
  let storage: ObjectStorage;
  let projectId: string;
  const workers: KilnWorker[] = [];

  before(async () => {
    db = await createTestDatabase();
    prisma = db.prisma;
    redis = new Redis(env.redisUrl, { lazyConnect: true });
    lifecycle = new BuildLifecycle({ repo: new BuildRepository(prisma), redis, logger: testLogger() });
    store = await createTestStorage();
    storage = store.storage;
    projectId = (await prisma.project.create({ data: { name: `p-${randomBytes(4).toString('hex')}` } })).id;
  });
  after(async () => {
    for (const w of workers) await w.stop(0).catch(() => {});
    redis?.disconnect();
    await db?.drop();
    await store?.cleanup();
  });

  const options = (over: Partial<RetentionOptions> = {}): RetentionOptions => ({
    lifecycle,
    storage,
    logger: testLogger(),
    days: 30,
    contextDays: 7,
    ...over,
  });
  const put = (key: string, text = key) => storage.put(key, Readable.from([text]));
  const exists = async (key: string) => (await storage.head(key)) !== undefined;
  const newContext = async () => {
    const key = contextKey(randomBytes(32).toString('hex'));
    await put(key);
    return key;
  };

  /** A build row as the API and worker leave it; objects are stored for what it has. */
  async function row(o: {
    id?: string;
    status: Build['status'];
    context: string;
    createdAt: Date;
    finishedAt?: Date;
    artifactKey?: string;
    cachedFromId?: string;
    withLog?: boolean;
  }): Promise<Build> {
    const id = o.id ?? `b${randomBytes(10).toString('hex')}`;
    const artifactKey = o.artifactKey ?? (o.status === 'succeeded' ? `artifacts/${id}/app.tar` : undefined);
    if (artifactKey && !o.cachedFromId) await put(artifactKey);
    if (o.withLog ?? !o.cachedFromId) {
      await put(logKey(id));
      await put(stepsKey(id));
    }
    return prisma.build.create({
      data: {
        id,
        projectId,
        status: o.status,
        spec: JSON.parse(JSON.stringify(parseBuildSpec({ output: 'type=tar,dest=app.tar' }))),
        contextKey: o.context,
        contextDigest: `sha256:${o.context.slice(16, 80)}`,
        contextSize: 10n,
        createdAt: o.createdAt,
        ...(o.finishedAt ? { finishedAt: o.finishedAt, startedAt: o.finishedAt } : {}),
        ...(artifactKey ? { artifactKey, artifactSize: 10n, artifactDigest: 'sha256:x' } : {}),
        ...(o.cachedFromId ? { cachedFromId: o.cachedFromId } : { logKey: logKey(id) }),
      },
    });
  }
  const statusOf = async (id: string) =>
    (await prisma.build.findUniqueOrThrow({ where: { id }, select: { status: true } })).status;

  test('old builds expire and lose their log; a shared artifact stays until its last live build expires; contexts go when unused', async () => {
    const now = new Date();
    const ctxShared = await newContext();
    const ctxOld = await newContext();
    const ctxQueued = await newContext();
    // S ran 40 days ago; C was answered from the cache yesterday and shares S's artifact.
    const s = await row({
      status: 'succeeded',
      context: ctxShared,
      createdAt: daysAgo(now, 40),
      finishedAt: daysAgo(now, 40),
    });
    const c = await row({
      status: 'succeeded',
      context: ctxShared,
      createdAt: daysAgo(now, 1),
      finishedAt: daysAgo(now, 1),
      cachedFromId: s.id,
      artifactKey: s.artifactKey ?? '',
    });
    const failed = await row({
      status: 'failed',
      context: ctxOld,
      createdAt: daysAgo(now, 40),
      finishedAt: daysAgo(now, 40),
    });
    const canceled = await row({
      status: 'canceled',
      context: ctxOld,
      createdAt: daysAgo(now, 31),
      finishedAt: daysAgo(now, 31),
    });
    const recent = await row({
      status: 'succeeded',
      context: ctxOld,
      createdAt: daysAgo(now, 10),
      finishedAt: daysAgo(now, 10),
    });
    // An old build still waiting keeps its context, whatever its age.
    const queued = await row({ status: 'queued', context: ctxQueued, createdAt: daysAgo(now, 40) });

    const storedBytes = async () =>
      Number((await prisma.project.findUniqueOrThrow({ where: { id: projectId } })).storedBytes);
    // Three contexts and two artifacts (C shares S's) of 10 bytes each.
    assert.equal(await storedBytes(), 50);

    const first = await runRetentionOnce(options(), now);
    assert.deepEqual(new Set(first.expired), new Set([s.id, failed.id, canceled.id]));
    // ctxOld is no longer used by a recent or unfinished build: its charge goes with it.
    assert.equal(first.contextChargesReleased, 1);
    assert.equal(await storedBytes(), 40);
    assert.deepEqual(first.artifactsKept, [s.artifactKey]);
    assert.deepEqual(first.artifactsDeleted, []);
    assert.equal(first.failed, 0);
    assert.equal(await statusOf(s.id), 'expired');
    assert.equal(await statusOf(c.id), 'succeeded');
    assert.equal(await statusOf(recent.id), 'succeeded');
    assert.equal(await statusOf(queued.id), 'queued');
    assert.ok(await exists(s.artifactKey ?? ''), 'the artifact C shares is kept');
    assert.equal(await exists(logKey(s.id)), false);
    assert.equal(await exists(logKey(failed.id)), false);
    assert.ok(await exists(logKey(recent.id)));
    for (const [b, kept] of [
      [s, false],
      [failed, false],
      [recent, true],
    ] as const) {
      assert.equal(await exists(stepsKey(b.id)), kept, `steps of ${b.id}`);
    }
    const purged = await prisma.build.findMany({ where: { purgedAt: { not: null } }, select: { id: true } });
    assert.deepEqual(new Set(purged.map((p) => p.id)), new Set([s.id, failed.id, canceled.id]));
    // ctxOld: `recent` (10 days) is past the 7-day context retention too; ctxShared: C is 1 day old.
    assert.deepEqual(first.contextsDeleted, [ctxOld]);
    assert.equal(await exists(ctxOld), false);
    assert.ok(await exists(ctxShared));
    assert.ok(await exists(ctxQueued));

    // Nothing more to do at the same time: a second pass changes nothing.
    const again = await runRetentionOnce(options(), now);
    assert.deepEqual(again, {
      expired: [],
      artifactsDeleted: [],
      artifactsKept: [],
      contextsDeleted: [],
      cachesDropped: [],
      contextChargesReleased: 0,
      hookReceiptsDeleted: 0,
      failed: 0,
    });

    // A month later C expires too, and the shared artifact goes with it.
    const later = await runRetentionOnce(options(), new Date(now.getTime() + 30 * DAY));
    assert.deepEqual(new Set(later.expired), new Set([c.id, recent.id]));
    assert.deepEqual(
      new Set(later.artifactsDeleted),
      new Set([s.artifactKey, recent.artifactKey].filter(Boolean)),
    );
    assert.equal(await exists(s.artifactKey ?? ''), false);
    assert.equal(await exists(recent.artifactKey ?? ''), false);
    assert.deepEqual(later.contextsDeleted, [ctxShared]);
    assert.ok(await exists(ctxQueued), 'the queued build still needs its context');
    // Left: ctxQueued's charge (10 bytes), kept by the queued build.
    assert.equal(later.contextChargesReleased, 1);
    assert.equal(await storedBytes(), 10);
    const marked = await prisma.build.count({ where: { contextKey: ctxShared, contextDeletedAt: null } });
    assert.equal(marked, 0);
    await prisma.build.delete({ where: { id: queued.id } });
  });

  test('git builds (no stored context) expire like others and are no context to delete', async () => {
    const now = new Date();
    const git = await prisma.build.create({
      data: {
        projectId,
        status: 'failed',
        spec: JSON.parse(JSON.stringify(parseBuildSpec({}))),
        source: 'github',
        gitUrl: 'https://example.invalid/o/r.git',
        gitRef: 'refs/heads/main',
        gitCommit: 'a'.repeat(40),
        createdAt: daysAgo(now, 40),
        finishedAt: daysAgo(now, 40),
      },
    });
    const report = await runRetentionOnce(options(), now);
    assert.equal(report.failed, 0);
    assert.ok(report.expired.includes(git.id));
    assert.equal(await statusOf(git.id), 'expired');
  });

  test('webhook receipts older than the retention go, in batches; newer ones stay', async () => {
    const now = new Date();
    const receipt = (deliveryId: string, receivedAt: Date) =>
      prisma.hookDelivery.create({
        data: { provider: 'github', scope: projectId, deliveryId, receivedAt, outcome: 'built' },
      });
    for (let i = 0; i < 5; i++) await receipt(`old-${i}`, daysAgo(now, 31));
    await receipt('recent', daysAgo(now, 29));
    const report = await runRetentionOnce(options({ batchSize: 2 }), now);
    assert.equal(report.failed, 0);
    assert.equal(report.hookReceiptsDeleted, 5);
    const left = await prisma.hookDelivery.findMany({ where: { scope: projectId } });
    assert.deepEqual(
      left.map((r) => r.deliveryId),
      ['recent'],
    );
  });

  test("an expired build's other attempts' artifacts go too; a shared artifact below its prefix stays", async () => {
    const now = new Date();
    const old = { createdAt: daysAgo(now, 40), finishedAt: daysAgo(now, 40) };
    // Attempt 1 stored its artifact, but its final write never landed; attempt 2 failed.
    const failed = await row({ status: 'failed', context: await newContext(), ...old });
    const orphan = `artifacts/${failed.id}/1/app.tar`;
    await put(orphan);
    await put(`${orphan}.provenance.json`);
    // The source of a cached build still live, with an orphan of its own attempt 1.
    const sourceId = `b${randomBytes(10).toString('hex')}`;
    const source = await row({
      id: sourceId,
      status: 'succeeded',
      context: await newContext(),
      artifactKey: `artifacts/${sourceId}/2/app.tar`,
      ...old,
    });
    const sourceOrphan = `artifacts/${sourceId}/1/app.tar`;
    await put(sourceOrphan);
    const hit = await row({
      status: 'succeeded',
      context: source.contextKey ?? '',
      artifactKey: `artifacts/${sourceId}/2/app.tar`,
      cachedFromId: sourceId,
      createdAt: now,
      finishedAt: now,
    });

    const report = await runRetentionOnce(options(), now);
    assert.equal(report.failed, 0);
    assert.ok(report.expired.includes(failed.id) && report.expired.includes(sourceId));
    for (const key of [orphan, `${orphan}.provenance.json`, sourceOrphan]) {
      assert.ok(report.artifactsDeleted.includes(key), key);
      assert.equal(await exists(key), false, key);
    }
    assert.ok(report.artifactsKept.includes(`artifacts/${sourceId}/2/app.tar`));
    assert.ok(await exists(`artifacts/${sourceId}/2/app.tar`), 'the live cached build still has it');
    assert.equal(await statusOf(hit.id), 'succeeded');
  });

  test('a dropped cache loses its manifests before its blobs, and its full mark last; with the cache off, unused caches still go', async () => {
    const project = `pc${randomBytes(4).toString('hex')}`;
    const keys = [
      `cache/${project}/full`,
      `cache/${project}/blobs/sha256/${'a'.repeat(64)}`,
      `cache/${project}/blobs/sha256/${'b'.repeat(64)}`,
      `cache/${project}/latest.json`,
      `cache/${project}/manifests/kiln`,
    ];
    for (const k of keys) await put(k);
    const deleted: string[] = [];
    const recording: ObjectStorage = Object.create(storage, {
      delete: {
        value: async (key: string) => {
          deleted.push(key);
          return storage.delete(key);
        },
      },
    });
    const over = await runRetentionOnce(options({ storage: recording, buildCacheMaxBytes: 1 }), new Date());
    assert.ok(over.cachesDropped.includes(project));
    const mine = deleted.filter((k) => k.startsWith(`cache/${project}/`));
    assert.deepEqual(mine.slice(0, 2).sort(), [keys[3], keys[4]]);
    // While the mark stands, no build exports into the cache being deleted.
    assert.equal(mine.at(-1), keys[0]);
    assert.equal(mine.length, 5);

    // KILN_BUILD_CACHE=off after a while on: what is left is not kept for ever, though not
    // dropped at once either (another worker may still use it).
    for (const k of keys.slice(1)) await put(k);
    assert.ok(!(await runRetentionOnce(options(), new Date())).cachesDropped.includes(project));
    const off = await runRetentionOnce(options(), new Date(Date.now() + 31 * DAY));
    assert.ok(off.cachesDropped.includes(project));
    for (const k of keys) assert.equal(await exists(k), false, k);
  });

  test('a delete that fails is retried by the next pass', async () => {
    const now = new Date();
    const b = await row({
      status: 'succeeded',
      context: await newContext(),
      createdAt: daysAgo(now, 60),
      finishedAt: daysAgo(now, 60),
    });
    let failNext = true;
    const flaky: ObjectStorage = Object.create(storage, {
      delete: {
        value: async (key: string) => {
          if (key === b.artifactKey && failNext) {
            failNext = false;
            throw new Error('storage is down');
          }
          return storage.delete(key);
        },
      },
    });
    const first = await runRetentionOnce(options({ storage: flaky }), now);
    assert.ok(first.expired.includes(b.id));
    assert.equal(first.failed, 1);
    const row1 = await prisma.build.findUniqueOrThrow({ where: { id: b.id } });
    assert.equal(row1.status, 'expired');
    assert.equal(row1.purgedAt, null);
    assert.ok(await exists(b.artifactKey ?? ''));

    const second = await runRetentionOnce(options({ storage: flaky }), now);
    assert.deepEqual(second.expired, []);
    assert.deepEqual(second.artifactsDeleted, [b.artifactKey]);
    assert.equal(second.failed, 0);
    assert.ok((await prisma.build.findUniqueOrThrow({ where: { id: b.id } })).purgedAt);
    assert.equal(await exists(b.artifactKey ?? ''), false);
  });

  test('a context is not deleted while a build that will use it is being inserted (shared advisory lock)', async () => {
    const now = new Date();
    const ctx = await newContext();
    await row({ status: 'failed', context: ctx, createdAt: daysAgo(now, 20), finishedAt: daysAgo(now, 20) });
    // The API's insert: shared lock, check the object, insert; held open a while.
    let inserted = false;
    const api = prisma.$transaction(async (tx) => {
      await lockContextObject(tx, ctx, 'shared');
      assert.ok(await exists(ctx));
      await sleep(600);
      await tx.build.create({
        data: {
          projectId,
          status: 'queued',
          spec: {},
          contextKey: ctx,
          contextDigest: 'sha256:x',
          contextSize: 1n,
        },
      });
      inserted = true;
    });
    await sleep(100);
    const report = await runRetentionOnce(options(), now);
    await api;
    assert.ok(inserted);
    assert.ok(!report.contextsDeleted.includes(ctx), 'retention waited for the insert and saw the new build');
    assert.ok(await exists(ctx));
  });

  test('a cached build made while its source expires keeps the shared artifact (FOR SHARE)', async () => {
    const now = new Date();
    const ctx = await newContext();
    const source = await row({
      status: 'succeeded',
      context: ctx,
      createdAt: daysAgo(now, 45),
      finishedAt: daysAgo(now, 45),
    });
    // What the API's reuseResult does: hold the source FOR SHARE while inserting the cached row.
    const hit = prisma.$transaction(async (tx) => {
      const held = await tx.$queryRaw<Array<{ id: string }>>`
        SELECT id FROM "Build" WHERE id = ${source.id} AND status = 'succeeded' FOR SHARE`;
      assert.equal(held.length, 1);
      await sleep(600);
      return tx.build.create({
        data: {
          projectId,
          status: 'succeeded',
          spec: {},
          contextKey: ctx,
          contextDigest: 'sha256:x',
          contextSize: 1n,
          cachedFromId: source.id,
          artifactKey: source.artifactKey,
          finishedAt: new Date(),
        },
      });
    });
    await sleep(100);
    const report = await runRetentionOnce(options(), now);
    const cached = await hit;
    assert.ok(report.expired.includes(source.id));
    assert.ok(report.artifactsKept.includes(source.artifactKey ?? ''));
    assert.ok(await exists(source.artifactKey ?? ''), 'the artifact the new cached build shares is kept');
    assert.equal(await statusOf(cached.id), 'succeeded');
  });

  test('the schedule: one worker of several runs each round', async () => {
    const redis = new Redis(env.redisUrl);
    const keyPrefix = `kr-${randomBytes(4).toString('hex')}`;
    try {
      let runs = 0;
      const schedules = [1, 2, 3].map(
        () =>
          new RetentionSchedule({
            redis,
            logger: testLogger(),
            keyPrefix,
            intervalMs: 300,
            run: async () => {
              runs++;
            },
          }),
      );
      for (const s of schedules) s.start();
      await sleep(1600);
      for (const s of schedules) await s.stop();
      // ~6 rounds in 1.6 s (one at start, then every 300 ms); three workers without the lock: ~18.
      assert.ok(runs >= 3 && runs <= 8, `${runs} runs`);
      assert.ok(await redis.exists(`${keyPrefix}:retention:lock`));
    } finally {
      await redis.quit();
    }
  });

  test('a started worker runs retention on its own, every KILN_RETENTION_INTERVAL_SECONDS', async () => {
    const now = new Date();
    const old = await row({
      status: 'succeeded',
      context: await newContext(),
      createdAt: daysAgo(now, 90),
      finishedAt: daysAgo(now, 90),
    });
    const prefix = `kr-${randomBytes(4).toString('hex')}`;
    const worker = createWorker(
      testConfig({
        databaseUrl: db.url,
        // Never dialed: no health checks, no jobs.
        builders: [{ address: 'tcp://127.0.0.1:9', concurrency: 1 }],
        retention: { days: 30, contextDays: 7, intervalSeconds: 1 },
      }),
      {
        prisma,
        storage,
        logger: testLogger(),
        queuePrefix: prefix,
        keyPrefix: prefix,
        initialHealthCheck: false,
        healthIntervalMs: 0,
        reconcileIntervalMs: 0,
      },
    );
    workers.push(worker);
    await worker.start();
    // The first round runs at start; then a newly old build is picked up by a later round.
    await waitForBuild(prisma, old.id, 5000, (b) => b.status === 'expired');
    const next = await row({
      status: 'failed',
      context: await newContext(),
      createdAt: daysAgo(now, 90),
      finishedAt: daysAgo(now, 90),
    });
    await waitForBuild(prisma, next.id, 5000, (b) => b.status === 'expired' && b.purgedAt !== null);
    assert.equal(await exists(old.artifactKey ?? ''), false);
    assert.equal(await exists(logKey(next.id)), false);
  });
});
