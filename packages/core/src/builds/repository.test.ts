import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { createTestDatabase, type TestDatabase } from '../../test-support/services.js';
import { createDatabase, type Database, isUniqueViolation, Prisma, TokenQueries } from '../db/index.js';
import { lockContextObject } from './context-lock.js';
import { BuildRepository, COLUMNS_SET_LATER, INSERT_COLUMNS } from './repository.js';

// The repository's SQL paths must return exactly what Prisma returns for the same rows (callers take either),
// including timestamps written in UTC, BigInt sizes, JSON specs and nulls.
// Away from UTC, so a timestamp read as local time would show.
process.env.TZ = 'America/New_York';

let testDb: TestDatabase;
let database: Database;
let queries: BuildRepository;
let tokens: TokenQueries;

before(async () => {
  testDb = await createTestDatabase();
  database = createDatabase(testDb.url);
  queries = new BuildRepository(database.prisma, database.pool);
  tokens = new TokenQueries(database.pool);
});
after(async () => {
  await database?.close();
  await testDb?.drop();
});

async function project(name: string) {
  return database.prisma.project.create({ data: { name } });
}

test('projectBuild returns the row Prisma returns, every column', async () => {
  const p = await project('hot-a');
  const created = await database.prisma.build.create({
    data: {
      projectId: p.id,
      status: 'succeeded',
      spec: { output: { type: 'tar', dest: 'app.tar' }, buildArgs: { A: '1' } },
      contextDigest: `sha256:${'a'.repeat(64)}`,
      contextSize: 9_007_199_254_740_993n,
      contextKey: 'contexts/sha256/a.tar',
      builder: 'docker:///run/docker.sock',
      attempts: 2,
      startedAt: new Date('2026-01-02T03:04:05.678Z'),
      finishedAt: new Date('2026-01-02T03:04:06.001Z'),
      artifactKey: 'artifacts/x/app.tar',
      artifactSize: 123n,
      artifactDigest: `sha256:${'b'.repeat(64)}`,
      idempotencyKey: 'k1',
    },
  });
  const viaPrisma = await database.prisma.build.findUnique({ where: { id: created.id } });
  const viaSql = await queries.projectBuild(p.id, created.id);
  assert.deepEqual(viaSql, viaPrisma);
  assert.equal(viaSql?.contextSize, 9_007_199_254_740_993n);
  assert.equal(viaSql?.startedAt?.toISOString(), '2026-01-02T03:04:05.678Z');
});

test("projectBuild: another project's build and a missing id are both null", async () => {
  const owner = await project('hot-b');
  const other = await project('hot-c');
  const b = await database.prisma.build.create({ data: { projectId: owner.id, spec: {} } });
  assert.equal(await queries.projectBuild(other.id, b.id), null);
  assert.equal(await queries.projectBuild(owner.id, 'missing'), null);
  assert.deepEqual(
    await queries.projectBuild(owner.id, b.id),
    await database.prisma.build.findUnique({ where: { id: b.id } }),
  );
});

test('tokenByHash finds live and revoked tokens by hash', async () => {
  const p = await project('hot-d');
  const live = await database.prisma.apiToken.create({
    data: { projectId: p.id, name: 'live', tokenHash: 'h-live' },
  });
  const revokedAt = new Date('2026-03-04T05:06:07.089Z');
  await database.prisma.apiToken.create({
    data: { projectId: p.id, name: 'old', tokenHash: 'h-old', revokedAt },
  });
  assert.deepEqual(await tokens.tokenByHash('h-live'), {
    id: live.id,
    projectId: p.id,
    revokedAt: null,
    scope: 'manage',
    projectDisabledAt: null,
  });
  assert.deepEqual((await tokens.tokenByHash('h-old'))?.revokedAt, revokedAt);
  assert.equal(await tokens.tokenByHash('h-none'), null);
});

test('resultCacheSource: the newest succeeded build with the key and platform, in time, with an artifact', async () => {
  const p = await project('hot-e');
  const other = await project('hot-f');
  const at = (iso: string) => new Date(iso);
  const make = (data: Record<string, unknown>) =>
    database.prisma.build.create({
      data: {
        projectId: p.id,
        spec: {},
        cacheKey: 'k',
        platform: 'linux/amd64',
        status: 'succeeded',
        artifactKey: 'artifacts/a',
        finishedAt: at('2026-05-01T00:00:00Z'),
        ...data,
      },
    });
  await make({ finishedAt: at('2026-05-02T00:00:00Z') });
  const newest = await make({ finishedAt: at('2026-05-03T00:00:00Z') });
  await make({ finishedAt: at('2026-05-04T00:00:00Z'), status: 'failed' });
  await make({ finishedAt: at('2026-05-04T00:00:00Z'), artifactKey: null });
  await make({ finishedAt: at('2026-05-04T00:00:00Z'), platform: 'linux/arm64' });
  await make({ finishedAt: at('2026-05-04T00:00:00Z'), cacheKey: 'other' });
  await make({ finishedAt: at('2026-05-04T00:00:00Z'), projectId: other.id });

  const since = at('2026-04-01T00:00:00Z');
  assert.deepEqual(await queries.resultCacheSource(p.id, 'k', 'linux/amd64', since), newest);
  assert.equal(
    await queries.resultCacheSource(p.id, 'k', 'linux/amd64', at('2026-05-03T00:00:00.001Z')),
    null,
  );
  assert.equal(await queries.resultCacheSource(p.id, 'k', 'linux/s390x', since), null);
});

test("storedContextOf: the project's own build with the digest and Dockerfile, recent or unfinished, its object kept", async () => {
  const p = await project('ctx-a');
  const other = await project('ctx-b');
  const at = (iso: string) => new Date(iso);
  const digest = `sha256:${'d'.repeat(64)}`;
  const make = (data: Record<string, unknown>) =>
    database.prisma.build.create({
      data: {
        projectId: p.id,
        spec: { file: 'Dockerfile' },
        status: 'succeeded',
        contextDigest: digest,
        contextKey: 'contexts/d',
        contextSize: 42n,
        createdAt: at('2026-05-01T00:00:00Z'),
        ...data,
      },
    });
  const since = at('2026-05-10T00:00:00Z');
  const found = { contextKey: 'contexts/d', contextSize: 42n };
  // Another project built it within the window (so the object is kept): not this project's.
  await make({ projectId: other.id, createdAt: at('2026-05-20T00:00:00Z') });
  // This project built it before the window: the answer must not tell that someone else did since.
  const old = await make({});
  assert.equal(await queries.storedContextOf(p.id, digest, 'Dockerfile', since), undefined);
  // Two hours before the cutoff: a cutoff compared in New York's time (4 h behind) would let it in.
  await database.prisma.build.update({
    where: { id: old.id },
    data: { createdAt: at('2026-05-09T22:00:00Z') },
  });
  assert.equal(await queries.storedContextOf(p.id, digest, 'Dockerfile', since), undefined);
  // Still queued from then: its context is kept for it.
  await database.prisma.build.update({ where: { id: old.id }, data: { status: 'queued' } });
  assert.deepEqual(await queries.storedContextOf(p.id, digest, 'Dockerfile', since), found);
  await database.prisma.build.update({ where: { id: old.id }, data: { status: 'succeeded' } });
  const recent = await make({ createdAt: at('2026-05-15T00:00:00Z') });
  assert.deepEqual(await queries.storedContextOf(p.id, digest, 'Dockerfile', since), found);
  assert.equal(await queries.storedContextOf(p.id, digest, 'other/Dockerfile', since), undefined);
  await database.prisma.build.update({ where: { id: recent.id }, data: { contextDeletedAt: new Date() } });
  assert.equal(await queries.storedContextOf(p.id, digest, 'Dockerfile', since), undefined);
});

test("deleteQueued takes the context's charge back, unless another build of the project uses it", async () => {
  const p = await project('charge-back');
  const make = (contextKey: string) =>
    database.prisma.build.create({
      data: { projectId: p.id, spec: {}, status: 'queued', contextKey, contextSize: 100n },
    });
  const storedBytes = async () =>
    (await database.prisma.project.findUniqueOrThrow({ where: { id: p.id } })).storedBytes;
  const alone = await make('contexts/alone');
  assert.equal(await storedBytes(), 100n);
  await queries.deleteQueued(alone.id, new Date(0));
  assert.equal(await storedBytes(), 0n);
  assert.equal(await database.prisma.projectObject.count({ where: { projectId: p.id } }), 0);
  const kept = await make('contexts/shared');
  const dropped = await make('contexts/shared');
  await queries.deleteQueued(dropped.id, new Date(0));
  assert.equal(await storedBytes(), 100n, 'still used by another build of the project');
  // Only an old finished build of the project uses it besides: that keeps no charge (retention's rule).
  const old = await make('contexts/old');
  await database.prisma.build.update({
    where: { id: old.id },
    data: { status: 'succeeded', createdAt: new Date('2026-01-01T00:00:00Z') },
  });
  const again = await make('contexts/old');
  await queries.deleteQueued(again.id, new Date('2026-02-01T00:00:00Z'));
  assert.equal(
    await database.prisma.projectObject.count({ where: { projectId: p.id, key: 'contexts/old' } }),
    0,
  );
  // Not queued any more: left as it is.
  await database.prisma.build.update({ where: { id: kept.id }, data: { status: 'running' } });
  await queries.deleteQueued(kept.id, new Date(0));
  assert.equal(await database.prisma.build.count({ where: { id: kept.id } }), 1);
});

test('PostgreSQL dropping a pooled connection is reported, not a crash, and the pool goes on', async () => {
  const dropped: Error[] = [];
  const other = createDatabase(testDb.url, { onConnectionError: (err) => dropped.push(err) });
  try {
    const { rows } = await other.pool.query<{ pid: number }>('SELECT pg_backend_pid() AS pid');
    // The connection is idle in the pool now; end it from another session, as a restart would.
    await database.pool.query('SELECT pg_terminate_backend($1)', [rows[0]?.pid]);
    for (let i = 0; i < 100 && dropped.length === 0; i++) await new Promise((r) => setTimeout(r, 20));
    assert.equal(dropped.length, 1);
    assert.match(dropped[0]?.message ?? '', /terminating connection/);
    assert.equal(await new TokenQueries(other.pool).tokenByHash('none'), null);
  } finally {
    await other.close();
  }
});

test('insertQueued writes the row Prisma would: ULID id, UTC createdAt, defaults, BigInt size, JSON spec', async () => {
  const p = await project('hot-insert');
  const spec = { output: { type: 'tar', dest: 'app.tar', attrs: {} }, buildArgs: { A: '1' }, labels: {} };
  const before = Date.now();
  const inserted = await queries.insertQueued({
    projectId: p.id,
    spec,
    requestHash: 'r'.repeat(64),
    idempotencyKey: 'idem-1',
    cacheKey: 'c'.repeat(64),
    contextDigest: `sha256:${'d'.repeat(64)}`,
    contextSize: 9_007_199_254_740_993n,
    contextKey: 'contexts/sha256/d.tar',
  });
  const after = Date.now();
  assert.match(inserted.id, /^[0-9A-HJKMNP-TV-Z]{26}$/);
  assert.deepEqual(inserted, await database.prisma.build.findUnique({ where: { id: inserted.id } }));
  assert.equal(inserted.status, 'queued');
  assert.equal(inserted.source, 'api');
  assert.equal(inserted.attempts, 0);
  assert.equal(inserted.contextSize, 9_007_199_254_740_993n);
  assert.deepEqual(inserted.spec, spec);
  assert.ok(
    inserted.createdAt.getTime() >= before && inserted.createdAt.getTime() <= after,
    'createdAt is now, in UTC',
  );
  // Time-sortable like Prisma's: a later insert sorts after.
  await new Promise((r) => setTimeout(r, 2));
  const git = await queries.insertQueued({
    projectId: p.id,
    spec: {},
    requestHash: 'g'.repeat(64),
    idempotencyKey: null,
    cacheKey: null,
    source: 'github',
    gitUrl: 'https://example.invalid/r.git',
    gitRef: 'refs/heads/main',
    gitCommit: 'a'.repeat(40),
  });
  assert.ok(git.id > inserted.id);
  assert.equal(git.contextKey, null);
  assert.equal(git.contextSize, null);
  assert.equal(git.gitCommit, 'a'.repeat(40));
  assert.deepEqual(git, await database.prisma.build.findUnique({ where: { id: git.id } }));
});

test('insertQueued: a second build with the same idempotency key is a unique violation', async () => {
  const p = await project('hot-idem');
  const input = { projectId: p.id, spec: {}, requestHash: 'h', idempotencyKey: 'same', cacheKey: null };
  await queries.insertQueued(input);
  await assert.rejects(queries.insertQueued(input), (err) => isUniqueViolation(err));
  assert.equal(await database.prisma.build.count({ where: { projectId: p.id } }), 1);
});

test("insertQueued waits while retention holds the context's exclusive lock", async () => {
  const p = await project('hot-lock');
  const key = 'contexts/sha256/locked.tar';
  let releaseLock!: () => void;
  const released = new Promise<void>((r) => {
    releaseLock = r;
  });
  let locked!: () => void;
  const lockHeld = new Promise<void>((r) => {
    locked = r;
  });
  const retention = database.prisma.$transaction(
    async (tx) => {
      await lockContextObject(tx, key, 'exclusive');
      locked();
      await released;
    },
    { timeout: 20_000 },
  );
  await lockHeld;
  let done = false;
  const insert = queries
    .insertQueued({
      projectId: p.id,
      spec: {},
      requestHash: 'h',
      idempotencyKey: null,
      cacheKey: null,
      contextKey: key,
    })
    .then((b) => {
      done = true;
      return b;
    });
  await new Promise((r) => setTimeout(r, 300));
  assert.equal(done, false, 'the insert went in while retention held the lock');
  releaseLock();
  await retention;
  assert.equal((await insert).contextKey, key);
});

test("INSERT_COLUMNS and COLUMNS_SET_LATER are exactly Build's columns in Prisma's schema and in the database", async () => {
  const named = [...INSERT_COLUMNS.map(([c]) => c), ...COLUMNS_SET_LATER].sort();
  assert.equal(new Set(named).size, named.length, 'a column is named twice');
  // A column added to the schema and forgotten here fails this test.
  assert.deepEqual(named, Object.values(Prisma.BuildScalarFieldEnum).sort());
  const { rows } = await database.pool.query<{ column_name: string }>(
    `SELECT column_name FROM information_schema.columns WHERE table_name = 'Build'`,
  );
  assert.deepEqual(rows.map((r) => r.column_name).sort(), named);
});

test('projectAdmission counts queued builds up to the larger of the quota and countAtLeast', async () => {
  const p = await project('admission');
  for (let i = 0; i < 5; i++) {
    await queries.insertQueued({
      projectId: p.id,
      spec: {},
      requestHash: `h${i}`,
      idempotencyKey: null,
      cacheKey: null,
    });
  }
  await database.prisma.build.create({ data: { projectId: p.id, spec: {}, status: 'running' } });
  assert.equal((await queries.projectAdmission(p.id, 0, 3, null))?.queued, 3);
  assert.equal((await queries.projectAdmission(p.id, 10, 3, null))?.queued, 5);
  await database.prisma.project.update({
    where: { id: p.id },
    data: { maxQueuedBuilds: 4, disabledAt: new Date() },
  });
  const own = await queries.projectAdmission(p.id, 10, 1, null);
  assert.equal(own?.queued, 4);
  assert.equal(own?.maxQueuedBuilds, 4);
  assert.ok(own?.disabledAt);
  assert.equal(await queries.projectAdmission('missing', 10, 1, null), null);
});

test('stored bytes: each object is charged once per project at full size, shared or not, and released by retention', async () => {
  const a = await project('stored-a');
  const b = await project('stored-b');
  const stored = async (id: string) =>
    (await database.prisma.project.findUniqueOrThrow({ where: { id } })).storedBytes;
  const queue = (projectId: string, key: string, size: bigint, n: number) =>
    queries.insertQueued({
      projectId,
      spec: {},
      requestHash: `${key}-${n}`,
      idempotencyKey: null,
      cacheKey: null,
      contextDigest: `sha256:${key}`,
      contextSize: size,
      contextKey: key,
    });
  const shared = 'contexts/sha256/stored-shared.tar';
  const first = await queue(a.id, shared, 1000n, 1);
  await queue(a.id, shared, 1000n, 2);
  assert.equal(await stored(a.id), 1000n, 'a second build of the same context costs nothing more');
  await queue(b.id, shared, 1000n, 1);
  assert.equal(await stored(b.id), 1000n, 'sharing with another project does not split the cost');
  assert.equal(await stored(a.id), 1000n);
  const admission = await queries.projectAdmission(a.id, 10, 1, shared);
  assert.equal(admission?.storedBytes, 1000n);
  assert.equal(admission?.holdsContext, true);
  assert.equal(
    (await queries.projectAdmission(a.id, 10, 1, 'contexts/sha256/other.tar'))?.holdsContext,
    false,
  );

  // An artifact is charged when the row names it (succeed), and released when retention deletes it.
  await database.prisma.build.update({
    where: { id: first.id },
    data: { status: 'succeeded', artifactKey: `artifacts/${first.id}/o.tar`, artifactSize: 500n },
  });
  assert.equal(await stored(a.id), 1500n);
  await queries.releaseArtifactCharge(`artifacts/${first.id}/o.tar`);
  assert.equal(await stored(a.id), 1000n);

  // Contexts: a project whose builds are all older than the cutoff and finished stops paying,
  // although another project still uses the object.
  await database.prisma.build.updateMany({ where: { projectId: a.id }, data: { status: 'failed' } });
  const cutoff = new Date(Date.now() + 60_000);
  // (Other tests' projects may have charges to release too.)
  assert.ok((await queries.contextChargesToRelease(cutoff, 1000)).includes(shared));
  assert.equal(
    await queries.releaseContextCharges(shared, cutoff),
    1,
    "only A's charge: B's build is queued",
  );
  assert.equal(await stored(a.id), 0n);
  assert.equal(await stored(b.id), 1000n);
  assert.ok(!(await queries.contextChargesToRelease(cutoff, 1000)).includes(shared));
});

test('insertQueued with a cap: concurrent inserts stop exactly at the cap, with a context or without', async () => {
  const p = await project('capped');
  const insert = (i: number, contextKey?: string) =>
    queries.insertQueued(
      {
        projectId: p.id,
        spec: {},
        requestHash: `cap${i}`,
        idempotencyKey: null,
        cacheKey: null,
        ...(contextKey ? { contextDigest: 'sha256:c', contextSize: 1n, contextKey } : {}),
      },
      7,
    );
  const results = await Promise.all(
    Array.from({ length: 30 }, (_, i) => insert(i, i % 2 ? 'contexts/sha256/capped.tar' : undefined)),
  );
  assert.equal(results.filter(Boolean).length, 7);
  assert.equal(await database.prisma.build.count({ where: { projectId: p.id, status: 'queued' } }), 7);
  // A queued build that starts frees its place.
  const first = results.find(Boolean);
  await database.prisma.build.update({ where: { id: first?.id }, data: { status: 'running' } });
  assert.ok(await insert(100));
  assert.equal(await insert(101), undefined);
});
