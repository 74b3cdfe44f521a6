// BuildLifecycle against real PostgreSQL and Redis: every transition from every status is applied
// exactly when TRANSITIONS allows it, and a final state always has its events, its attempts
// ended, its secrets gone and its live log ended.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { after, before, describe, test } from 'node:test';
import { Redis } from 'ioredis';
import pino from 'pino';
import { createTestDatabase, type TestDatabase, testRedisUrl } from '../../test-support/services.js';
import { buildSecretsKey, storeBuildSecrets } from '../build-secrets.js';
import { BUILD_STATUSES, type BuildStatusName, logStreamKey } from '../builds.js';
import { createDatabase, type Database } from '../db/index.js';
import { BuildLifecycle } from './lifecycle.js';
import { BuildRepository } from './repository.js';
import { TRANSITIONS, type TransitionName } from './states.js';

let testDb: TestDatabase;
let database: Database;
let redis: Redis;
let lifecycle: BuildLifecycle;
let projectId: string;
const enqueued: string[] = [];

before(async () => {
  testDb = await createTestDatabase();
  database = createDatabase(testDb.url);
  redis = new Redis(testRedisUrl());
  lifecycle = new BuildLifecycle({
    repo: new BuildRepository(database.prisma, database.pool),
    redis,
    logger: pino({ level: 'silent' }),
    events: {
      async enqueue(ids) {
        enqueued.push(...ids);
      },
    },
  });
  const project = await database.prisma.project.create({ data: { name: 'lifecycle' } });
  projectId = project.id;
  await database.prisma.eventEndpoint.create({
    data: { projectId, url: 'http://127.0.0.1:9/hook', secret: 'whsec_test' },
  });
});
after(async () => {
  redis?.disconnect();
  await database?.close();
  await testDb?.drop();
});

/** A row in `status` on attempt 1 (open), with secrets in Redis. */
async function rowIn(status: BuildStatusName) {
  const build = await database.prisma.build.create({
    data: { projectId, spec: { output: { type: 'tar', dest: 'a.tar' } }, status, attempts: 1, builder: 'b1' },
  });
  const attempt = await database.prisma.buildAttempt.create({
    data: { buildId: build.id, number: 1, builder: 'b1' },
  });
  await storeBuildSecrets(redis, build.id, { s: Buffer.from('v') }, 600, randomBytes(32));
  return { build, attempt };
}

/** Applies `name` to the row the way its callers do; true when it changed the row. */
async function apply(name: TransitionName, row: Awaited<ReturnType<typeof rowIn>>): Promise<boolean> {
  const { build, attempt } = row;
  switch (name) {
    case 'queue':
    case 'answerFromCache':
      throw new Error('creations are tested on their own');
    case 'start':
      return (await lifecycle.start(build, 'b2')) !== undefined;
    case 'succeed':
      return (
        await lifecycle.succeed(
          build.id,
          { artifactKey: 'a' },
          { attemptId: attempt.id, outcome: 'succeeded' },
        )
      ).applied;
    case 'fail':
      return (
        await lifecycle.fail(build.id, {
          code: 'build_failed',
          message: 'RUN failed',
          attempt: { attemptId: attempt.id, outcome: 'failed' },
        })
      ).applied;
    case 'cancel':
      return (await lifecycle.cancel(build.id, 'canceled by request')).applied;
    case 'requeue':
      return lifecycle.requeue(build.id, {
        attemptId: attempt.id,
        number: 1,
        outcome: 'failed',
        code: 'infrastructure',
        message: 'builder gone',
      });
    case 'lose':
      return (await lifecycle.lose(build, 'lease expired', 3)) !== undefined;
    case 'expire':
      return lifecycle.expire(build.id);
  }
}

describe('every transition from every status', () => {
  const changing = (Object.keys(TRANSITIONS) as TransitionName[]).filter(
    (t) => t !== 'queue' && t !== 'answerFromCache',
  );
  for (const name of changing) {
    for (const status of BUILD_STATUSES) {
      const allowed = (TRANSITIONS[name].from as readonly string[]).includes(status);
      test(`${name} from ${status}: ${allowed ? 'applied' : 'refused'}`, async () => {
        const row = await rowIn(status);
        assert.equal(await apply(name, row), allowed);
        const after = await database.prisma.build.findUniqueOrThrow({ where: { id: row.build.id } });
        if (!allowed) {
          assert.equal(after.status, status, 'a refused transition changed the status');
          return;
        }
        assert.ok((TRANSITIONS[name].to as readonly string[]).includes(after.status));
      });
    }
  }
});

describe('final states', () => {
  test('succeed: attempt succeeded, events recorded and enqueued, secrets deleted, live log ended', async () => {
    const row = await rowIn('running');
    const result = await lifecycle.succeed(
      row.build.id,
      { artifactKey: 'artifacts/x/a.tar', artifactSize: 3n },
      { attemptId: row.attempt.id, outcome: 'succeeded' },
    );
    assert.ok(result.applied);
    assert.equal(result.build.status, 'succeeded');
    assert.ok(result.build.finishedAt);
    const attempt = await database.prisma.buildAttempt.findUniqueOrThrow({ where: { id: row.attempt.id } });
    assert.equal(attempt.outcome, 'succeeded');
    assert.ok(attempt.finishedAt);
    const deliveries = await database.prisma.eventDelivery.findMany({ where: { buildId: row.build.id } });
    assert.deepEqual(
      deliveries.map((d) => d.event),
      ['build.succeeded'],
    );
    assert.ok(enqueued.includes(deliveries[0]?.id ?? ''));
    assert.equal(await redis.exists(buildSecretsKey(row.build.id)), 0);
    const entries = await redis.xrange(logStreamKey(row.build.id), '-', '+');
    assert.deepEqual(entries.at(-1)?.[1], ['k', 'end', 'd', 'succeeded']);
  });

  test("succeed retried after its commit landed (reply lost): applied, the caller's own; another attempt's is refused", async () => {
    const row = await rowIn('running');
    const change = { artifactKey: `artifacts/${row.build.id}/1/a.tar`, artifactSize: 3n };
    const own = { attemptId: row.attempt.id, outcome: 'succeeded' as const };
    assert.ok((await lifecycle.succeed(row.build.id, change, own)).applied);
    const again = await lifecycle.succeed(row.build.id, change, own);
    assert.ok(again.applied, 'the retry of a committed succeed is its own');
    assert.equal(again.build.artifactKey, change.artifactKey);
    // Another attempt's run finding it succeeded: refused, as any final row refuses a transition.
    const other = await database.prisma.buildAttempt.create({
      data: { buildId: row.build.id, number: 2, builder: 'b2' },
    });
    const late = await lifecycle.succeed(
      row.build.id,
      { artifactKey: `artifacts/${row.build.id}/2/a.tar` },
      { attemptId: other.id, outcome: 'succeeded' },
    );
    assert.deepEqual(late, { applied: false, status: 'succeeded' });
    // Nor does a failure take a succeeded attempt for its own.
    const failed = await lifecycle.fail(row.build.id, {
      code: 'build_failed',
      message: 'x',
      attempt: { attemptId: row.attempt.id, outcome: 'failed' },
    });
    assert.deepEqual(failed, { applied: false, status: 'succeeded' });
    const deliveries = await database.prisma.eventDelivery.count({ where: { buildId: row.build.id } });
    assert.equal(deliveries, 1, 'the retry records no second event');
  });

  test('fail from BullMQ giving up (no attempt of its own): open attempts take its outcome; secrets deleted', async () => {
    const row = await rowIn('running');
    const result = await lifecycle.fail(row.build.id, {
      code: 'infrastructure',
      message: 'job stalled more than allowable limit',
      attempt: { outcome: 'lost' },
      logTail: '\nERROR: stalled\n',
    });
    assert.ok(result.applied);
    assert.equal(result.build.errorCode, 'infrastructure');
    const attempt = await database.prisma.buildAttempt.findUniqueOrThrow({ where: { id: row.attempt.id } });
    assert.equal(attempt.outcome, 'lost');
    assert.equal(attempt.errorCode, 'worker_lost');
    assert.equal(await redis.exists(buildSecretsKey(row.build.id)), 0);
    const entries = await redis.xrange(logStreamKey(row.build.id), '-', '+');
    assert.deepEqual(
      entries.map(([, f]) => f[1]),
      ['log', 'end'],
    );
  });

  test("a worker's own attempt fails; an attempt left open by a vanished worker is lost", async () => {
    const row = await rowIn('running');
    const own = await database.prisma.buildAttempt.create({
      data: { buildId: row.build.id, number: 2, builder: 'b2' },
    });
    await lifecycle.fail(row.build.id, {
      code: 'build_failed',
      message: 'RUN false',
      attempt: { attemptId: own.id, outcome: 'failed' },
    });
    const attempts = await database.prisma.buildAttempt.findMany({
      where: { buildId: row.build.id },
      orderBy: { number: 'asc' },
    });
    assert.deepEqual(
      attempts.map((a) => [a.number, a.outcome, a.errorCode]),
      [
        [1, 'lost', 'worker_lost'],
        [2, 'failed', 'build_failed'],
      ],
    );
  });

  test('cancel whileQueued leaves a running build to its worker', async () => {
    const running = await rowIn('running');
    const refused = await lifecycle.cancel(running.build.id, 'canceled by request', { whileQueued: true });
    assert.deepEqual(refused, { applied: false, status: 'running' });
    const queued = await rowIn('queued');
    const done = await lifecycle.cancel(queued.build.id, 'canceled by request', { whileQueued: true });
    assert.ok(done.applied);
    assert.equal(done.build.status, 'canceled');
  });

  test('a refused final transition leaves secrets, attempts and the live log alone', async () => {
    const row = await rowIn('canceled');
    assert.equal(
      (await lifecycle.fail(row.build.id, { code: 'timeout', message: 't', attempt: null })).applied,
      false,
    );
    assert.equal(await redis.exists(buildSecretsKey(row.build.id)), 1);
    assert.equal(await redis.exists(logStreamKey(row.build.id)), 0);
    const attempt = await database.prisma.buildAttempt.findUniqueOrThrow({ where: { id: row.attempt.id } });
    assert.equal(attempt.finishedAt, null);
  });
});

describe('attempt guards', () => {
  test('start only from the attempt count the caller read', async () => {
    const row = await rowIn('queued');
    assert.equal(await lifecycle.start({ ...row.build, attempts: 0 }, 'b2'), undefined);
    const attempt = await lifecycle.start(row.build, 'b2');
    assert.equal(attempt?.number, 2);
    const first = await database.prisma.buildAttempt.findUniqueOrThrow({ where: { id: row.attempt.id } });
    assert.equal(first.outcome, 'lost');
  });

  test('requeue does not take back a newer attempt, but ends its own', async () => {
    const row = await rowIn('running');
    await database.prisma.build.update({ where: { id: row.build.id }, data: { attempts: 2 } });
    const moved = await lifecycle.requeue(row.build.id, {
      attemptId: row.attempt.id,
      number: 1,
      outcome: 'lost',
      code: 'worker_stopped',
      message: 'stopping',
    });
    assert.equal(moved, false);
    assert.equal(
      (await database.prisma.build.findUniqueOrThrow({ where: { id: row.build.id } })).status,
      'running',
    );
    const attempt = await database.prisma.buildAttempt.findUniqueOrThrow({ where: { id: row.attempt.id } });
    assert.deepEqual([attempt.outcome, attempt.errorCode], ['lost', 'worker_stopped']);
  });

  test('lose: back to queued while attempts remain, failed (attempt lost) once they are used up', async () => {
    const row = await rowIn('running');
    assert.equal(await lifecycle.lose({ ...row.build, builder: 'other' }, 'lease expired', 3), undefined);
    assert.equal(await lifecycle.lose(row.build, 'lease expired', 3), 'requeued');
    const last = await rowIn('running');
    assert.equal(await lifecycle.lose(last.build, 'lease expired', 1), 'failed');
    const build = await database.prisma.build.findUniqueOrThrow({ where: { id: last.build.id } });
    assert.equal(build.status, 'failed');
    assert.match(build.errorMessage ?? '', /gave up after 1 attempts/);
    const attempt = await database.prisma.buildAttempt.findUniqueOrThrow({ where: { id: last.attempt.id } });
    assert.deepEqual([attempt.outcome, attempt.errorCode], ['lost', 'worker_lost']);
    assert.equal(await redis.exists(buildSecretsKey(last.build.id)), 0);
  });

  test('lose: attempts handed back by stopping workers use up none of the build', async () => {
    const row = await rowIn('running');
    // Two hand-backs (a rolling deploy), then the third worker is killed.
    await database.prisma.build.update({ where: { id: row.build.id }, data: { attempts: 3 } });
    for (const number of [2, 3])
      await database.prisma.buildAttempt.create({
        data: { buildId: row.build.id, number, builder: 'b1', outcome: 'lost', errorCode: 'worker_stopped' },
      });
    assert.equal(await lifecycle.lose({ ...row.build, attempts: 3 }, 'lease expired', 3), 'requeued');
  });
});

describe('creations', () => {
  test('queue inserts a queued row; answerFromCache a succeeded one sharing the source artifact, with its event', async () => {
    const queued = await lifecycle.queue({
      projectId,
      spec: {},
      requestHash: 'h',
      idempotencyKey: null,
      cacheKey: 'k',
    });
    assert.equal(queued.status, 'queued');
    const source = await database.prisma.build.create({
      data: {
        projectId,
        spec: {},
        status: 'succeeded',
        artifactKey: 'artifacts/s/a.tar',
        artifactSize: 5n,
        platform: 'linux/amd64',
      },
    });
    const cached = await lifecycle.answerFromCache(
      { projectId, spec: {}, requestHash: 'h2', cacheKey: 'k' },
      source,
    );
    assert.equal(cached?.status, 'succeeded');
    assert.equal(cached?.cachedFromId, source.id);
    assert.equal(cached?.artifactKey, source.artifactKey);
    const events = await database.prisma.eventDelivery.findMany({ where: { buildId: cached?.id ?? '' } });
    assert.deepEqual(
      events.map((e) => e.event),
      ['build.succeeded'],
    );
    // A source that stopped being succeeded (retention expired it) serves nothing.
    await lifecycle.expire(source.id);
    assert.equal(
      await lifecycle.answerFromCache({ projectId, spec: {}, requestHash: 'h3', cacheKey: 'k' }, source),
      undefined,
    );
  });
});
