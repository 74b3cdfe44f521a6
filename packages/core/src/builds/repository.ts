/**
 * The only code that reads or writes `Build` and `BuildAttempt` rows (a test in
 * repository-boundary.test.ts fails when such a query appears elsewhere). Status changes go
 * through BuildLifecycle, which calls the `tx`-taking writes below inside its transactions.
 *
 * Most queries go through Prisma. The API's per-request ones (a build by id, the result-cache
 * lookup, the insert) are named prepared SQL statements on the pool Prisma also uses: through
 * Prisma they spent most of a GET's CPU in its query compiler (bench/results/service.md), and its
 * insert took 45% of a POST's busy time. Their rows have exactly Prisma's shapes, so callers
 * cannot tell the paths apart; a test checks INSERT_COLUMNS against Prisma's schema metadata.
 */
import type pg from 'pg';
import { type BuildStatusName, CONTEXT_KEY_PREFIX } from '../builds.js';
import { type Build, type BuildAttempt, Prisma, type PrismaClient } from '../db/generated/client.js';
import { prismaRowTypes } from '../db/row-types.js';
import { newUlid } from '../db/ulid.js';
import type { ProjectQuotaRow } from '../quotas.js';
import { CONTEXT_LOCK_CLASS, insertWithContextLockSql, lockContextObject } from './context-lock.js';

type Tx = Prisma.TransactionClient;

/** A queued build as the API creates it; every other column takes its default. */
export interface QueuedBuildInput {
  projectId: string;
  spec: unknown;
  requestHash: string;
  idempotencyKey: string | null;
  cacheKey: string | null;
  /** An uploaded context (its object's key is locked while the row goes in, see context-lock.ts). */
  contextDigest?: string | null;
  contextSize?: bigint | null;
  contextKey?: string | null;
  /** api (default), github or gitlab. */
  source?: string;
  gitUrl?: string | null;
  gitRef?: string | null;
  gitCommit?: string | null;
  triggerId?: string | null;
}

/** The columns the insert sets, with the casts their parameters need (see insertQueued). */
export const INSERT_COLUMNS: ReadonlyArray<readonly [column: string, cast: string]> = [
  ['id', ''],
  ['projectId', ''],
  ['spec', '::jsonb'],
  ['requestHash', ''],
  ['idempotencyKey', ''],
  ['cacheKey', ''],
  ['contextDigest', ''],
  ['contextSize', '::bigint'],
  ['contextKey', ''],
  ['source', ''],
  ['gitUrl', ''],
  ['gitRef', ''],
  ['gitCommit', ''],
  ['triggerId', ''],
  ['createdAt', '::timestamp(3)'],
];
/**
 * Columns a new queued build leaves to their defaults (status is set by the statement itself) and
 * that later transitions fill. With INSERT_COLUMNS: every column of `Build`, which the test checks.
 */
export const COLUMNS_SET_LATER = [
  'status',
  'builder',
  'attempts',
  'startedAt',
  'finishedAt',
  'artifactKey',
  'artifactSize',
  'artifactDigest',
  'imageDigest',
  'logKey',
  'errorCode',
  'errorMessage',
  'platform',
  'cachedFromId',
  'purgedAt',
  'contextDeletedAt',
] as const;

const INSERT_COLUMN_LIST = `${INSERT_COLUMNS.map(([c]) => `"${c}"`).join(', ')}, "status"`;
// In INSERT ... SELECT, PostgreSQL types parameters by the SELECT list, not by the columns.
const insertParams = (first: number) =>
  `${INSERT_COLUMNS.map(([, cast], i) => `$${first + i}${cast}`).join(', ')}, 'queued'::"BuildStatus"`;
const INSERT_LOCKED = insertWithContextLockSql('Build', INSERT_COLUMN_LIST, insertParams(3));
const INSERT_PLAIN = `INSERT INTO "Build" (${INSERT_COLUMN_LIST}) VALUES (${insertParams(1)}) RETURNING *`;
/**
 * The condition of a capped insert: fewer than `cap` queued builds of the project. Counted by a
 * statement that starts after the project's queue lock is held, so it sees every earlier insert.
 */
const underQueuedCap = (projectId: string, cap: string) =>
  `WHERE (SELECT count(*) FROM (SELECT 1 FROM "Build" q
    WHERE q."projectId" = ${projectId} AND q."status" = 'queued' LIMIT ${cap}::int) c) < ${cap}::int`;
const CAP_PARAM = INSERT_COLUMNS.length + 1;
const INSERT_LOCKED_CAPPED = insertWithContextLockSql(
  'Build',
  INSERT_COLUMN_LIST,
  insertParams(3),
  underQueuedCap('$4', `$${CAP_PARAM + 2}`),
);
const INSERT_PLAIN_CAPPED = `INSERT INTO "Build" (${INSERT_COLUMN_LIST}) SELECT ${insertParams(1)}
  ${underQueuedCap('$2', `$${CAP_PARAM}`)} RETURNING *`;
/**
 * Retention's rule for a context charge (`ProjectObject o`): no build of its project created since
 * `cutoff`, nor an unfinished one, uses the context any more.
 */
const chargeUnused = (cutoff: Date) => Prisma.sql`NOT EXISTS (
  SELECT 1 FROM "Build" n
  WHERE n."contextKey" = o.key AND n."projectId" = o."projectId"
    AND (n."createdAt" >= ${cutoff} OR n.status IN ('queued', 'running')))`;

/** How long deleteQueued may wait for a context's lock (retention holds it during a delete). */
const DELETE_QUEUED_TIMEOUT_MS = 20_000;

/** Advisory-lock class ("KQUE") of a project's capped inserts: they take turns, so the cap is exact. */
const QUEUE_LOCK_CLASS = 0x4b515545;

/**
 * A project's queued builds now, whether it is disabled, its own quota columns, the bytes it keeps
 * stored and whether it is charged for the context of the build being admitted already.
 */
export type ProjectAdmission = ProjectQuotaRow & {
  queued: number;
  disabledAt: Date | null;
  storedBytes: bigint;
  holdsContext: boolean;
};

/** Columns a status change may set besides `status`. */
export type BuildChange = Omit<Prisma.BuildUpdateManyMutationInput, 'status'>;

/** Conditions on the row besides its status: the attempt a caller read, so it moves no newer one. */
export interface AttemptGuard {
  attempts?: number;
  builder?: string | null;
}

/** Columns of a finished attempt. */
export interface AttemptEnd {
  outcome: string;
  errorCode?: string | null;
  errorMessage?: string | null;
}

export class BuildRepository {
  constructor(
    readonly prisma: PrismaClient,
    /** Pool of the prepared statements; the API passes Prisma's own (createDatabase). */
    private readonly pool?: pg.Pool,
  ) {}

  /** Runs `fn` in one transaction; the lifecycle's writes take its `tx`. */
  transaction<T>(fn: (tx: Tx) => Promise<T>, options?: { timeoutMs?: number }): Promise<T> {
    return this.prisma.$transaction(fn, options?.timeoutMs ? { timeout: options.timeoutMs } : undefined);
  }

  private sql(): pg.Pool {
    if (!this.pool) throw new Error('BuildRepository: this query needs the pg pool (createDatabase)');
    return this.pool;
  }

  // --- reads -------------------------------------------------------------------------------

  byId(id: string, tx: Tx | PrismaClient = this.prisma): Promise<Build | null> {
    return tx.build.findUnique({ where: { id } });
  }

  /** How many attempts the build has had started (a worker's run is the last one, or superseded). */
  async attemptsOf(id: string): Promise<number | null> {
    const row = await this.prisma.build.findUnique({ where: { id }, select: { attempts: true } });
    return row?.attempts ?? null;
  }

  /** Whether the build is running at attempt `attempt`: that attempt's run still has it. */
  async runsAttempt(id: string, attempt: number): Promise<boolean> {
    const row = await this.prisma.build.findUnique({
      where: { id },
      select: { status: true, attempts: true },
    });
    return row?.status === 'running' && row.attempts === attempt;
  }

  /** Deletes up to `limit` webhook receipts received before `cutoff`; how many. */
  deleteHookReceiptsBefore(cutoff: Date, limit: number): Promise<number> {
    return this.prisma.$executeRaw`
      DELETE FROM "HookDelivery" WHERE id IN (
        SELECT id FROM "HookDelivery" WHERE "receivedAt" < ${cutoff} LIMIT ${limit}
      )`;
  }

  async statusOf(id: string): Promise<BuildStatusName | null> {
    const row = await this.prisma.build.findUnique({ where: { id }, select: { status: true } });
    return row?.status ?? null;
  }

  /** A project's build; another project's is indistinguishable from a missing one (null). */
  async projectBuild(projectId: string, id: string): Promise<Build | null> {
    const { rows } = await this.sql().query<Build>({
      name: 'kiln_project_build',
      text: 'SELECT * FROM "Build" WHERE "id" = $1 AND "projectId" = $2',
      values: [id, projectId],
      types: prismaRowTypes,
    });
    return rows[0] ?? null;
  }

  /**
   * What admitting one more build of a project needs: its queued builds now and its own quota
   * columns (null when the project does not exist). Every POST asks, so the count stops at the
   * larger of the project's queued-builds quota (its own, else `defaultQuota`) and `countAtLeast`:
   * past both, the number only has to say "over", and counting a backlog of tens of thousands on
   * every POST cost a third of the API's throughput. One indexed statement (Build projectId, status).
   * It also says whether the project is already charged for `contextKey` (stored bytes).
   */
  async projectAdmission(
    projectId: string,
    defaultQuota: number,
    countAtLeast: number,
    contextKey: string | null,
  ): Promise<ProjectAdmission | null> {
    const { rows } = await this.sql().query<ProjectAdmission>({
      name: 'kiln_project_admission',
      text: `SELECT p."disabledAt", p."maxQueuedBuilds", p."maxRunningBuilds", p."maxArtifactBytes", p."maxLogBytes",
          p."maxStoredBytes", p."storedBytes",
          (SELECT count(*)::int FROM (
            SELECT 1 FROM "Build" b WHERE b."projectId" = p."id" AND b."status" = 'queued'
            LIMIT GREATEST(COALESCE(p."maxQueuedBuilds", $2::int), $3::int)) q) AS queued,
          EXISTS (SELECT 1 FROM "ProjectObject" o WHERE o."projectId" = p."id" AND o."key" = $4) AS "holdsContext"
        FROM "Project" p WHERE p."id" = $1`,
      values: [projectId, defaultQuota, countAtLeast, contextKey],
      types: prismaRowTypes,
    });
    return rows[0] ?? null;
  }

  byIdempotencyKey(projectId: string, idempotencyKey: string): Promise<Build | null> {
    return this.prisma.build.findUnique({
      where: { projectId_idempotencyKey: { projectId, idempotencyKey } },
    });
  }

  /** A page of a project's builds, newest first; one more than `limit` tells whether a next page exists. */
  listPage(
    projectId: string,
    q: { status?: BuildStatusName | undefined; cursor?: string | undefined; limit: number },
  ): Promise<Build[]> {
    return this.prisma.build.findMany({
      where: {
        projectId,
        ...(q.status ? { status: q.status } : {}),
        ...(q.cursor ? { id: { lt: q.cursor } } : {}),
      },
      orderBy: { id: 'desc' },
      take: q.limit + 1,
    });
  }

  /**
   * The newest succeeded build of a project with this result-cache key and platform that finished
   * at or after `since` and still has its artifact: what the result cache answers from. One index
   * range (the Build index on projectId, cacheKey, status, platform, finishedAt).
   */
  async resultCacheSource(
    projectId: string,
    cacheKey: string,
    platform: string,
    since: Date,
  ): Promise<Build | null> {
    const { rows } = await this.sql().query<Build>({
      name: 'kiln_result_cache_source',
      text: `SELECT * FROM "Build"
        WHERE "projectId" = $1 AND "cacheKey" = $2 AND "status" = 'succeeded' AND "platform" = $3
          AND "finishedAt" >= $4 AND "artifactKey" IS NOT NULL
        ORDER BY "finishedAt" DESC LIMIT 1`,
      // The column has no time zone and holds UTC; pg would send the Date in local time.
      values: [projectId, cacheKey, platform, since.toISOString()],
      types: prismaRowTypes,
    });
    return rows[0] ?? null;
  }

  /** Builders on which an earlier attempt of this build failed for infrastructure reasons. */
  /**
   * The stored context object of an earlier build of this project with this digest and Dockerfile
   * path (so the path is known to be in it), made since `since` (the context retention cutoff) or
   * not yet finished, unless retention deleted it: what a build by digest, without an upload, may
   * use. Only the project's own builds count: another project's contexts are never revealed, not
   * even their existence, and an old build of its own counts only while its context would be kept
   * for it alone (else the answer would tell whether another project used the same context
   * since). One index range (projectId, contextDigest).
   */
  async storedContextOf(
    projectId: string,
    digest: string,
    file: string,
    since: Date,
  ): Promise<{ contextKey: string; contextSize: bigint } | undefined> {
    const { rows } = await this.sql().query<{ contextKey: string; contextSize: string }>({
      name: 'kiln_stored_context_of',
      text: `SELECT "contextKey", "contextSize" FROM "Build"
        WHERE "projectId" = $1 AND "contextDigest" = $2 AND spec->>'file' = $3
          AND "contextKey" IS NOT NULL AND "contextDeletedAt" IS NULL
          AND ("createdAt" >= $4 OR status IN ('queued', 'running'))
        LIMIT 1`,
      // The column has no time zone and holds UTC; pg would send the Date in local time.
      values: [projectId, digest, file, since.toISOString()],
    });
    const row = rows[0];
    return row ? { contextKey: row.contextKey, contextSize: BigInt(row.contextSize) } : undefined;
  }

  /**
   * The size of the largest context any build of this project was given (0 for none): every
   * upload the project may bring over its stored-bytes quota (one it holds, a result-cache answer,
   * an idempotent retry) has the size of one of them. It reads every build row of the project
   * (no index holds the size), so it is asked only for uploads that pass what the quota leaves.
   */
  async largestContextOf(projectId: string): Promise<number> {
    const { rows } = await this.sql().query<{ largest: string }>({
      name: 'kiln_largest_context_of',
      text: `SELECT COALESCE(max("contextSize"), 0)::text AS largest FROM "Build" WHERE "projectId" = $1`,
      values: [projectId],
    });
    return Number(rows[0]?.largest ?? 0);
  }

  /** How many attempts of the build a stopping worker handed back (they use up no attempt). */
  handedBack(buildId: string): Promise<number> {
    return this.prisma.buildAttempt.count({ where: { buildId, errorCode: 'worker_stopped' } });
  }

  async buildersThatFailed(buildId: string): Promise<string[]> {
    const rows = await this.prisma.buildAttempt.findMany({
      where: { buildId, outcome: 'failed', errorCode: 'infrastructure' },
      select: { builder: true },
    });
    return [...new Set(rows.map((r) => r.builder))];
  }

  /** Reconciler: queued rows created before `before`, oldest first. */
  queuedBefore(
    before: Date,
    limit: number,
  ): Promise<Array<Pick<Build, 'id' | 'attempts' | 'contextKey' | 'createdAt'>>> {
    return this.prisma.build.findMany({
      where: { status: 'queued', createdAt: { lt: before } },
      select: { id: true, attempts: true, contextKey: true, createdAt: true },
      orderBy: { createdAt: 'asc' },
      take: limit,
    });
  }

  /** Reconciler: a build's place among its project's queued builds, oldest first (1 for the first). */
  async queuedRank(id: string): Promise<number> {
    const rows = await this.prisma.$queryRaw<Array<{ rank: number }>>`
      SELECT count(*)::int AS rank FROM "Build" o, "Build" b
      WHERE b.id = ${id} AND o."projectId" = b."projectId" AND o.status = 'queued' AND o."createdAt" <= b."createdAt"`;
    return rows[0]?.rank ?? 1;
  }

  /** Reconciler: running rows, longest running first. */
  running(limit: number): Promise<Array<Pick<Build, 'id' | 'builder' | 'attempts'>>> {
    return this.prisma.build.findMany({
      where: { status: 'running' },
      select: { id: true, builder: true, attempts: true },
      orderBy: { startedAt: 'asc' },
      take: limit,
    });
  }

  /** Retention: final rows finished before `cutoff`, and expired ones whose objects are still to delete. */
  expiring(
    cutoff: Date,
    limit: number,
  ): Promise<Array<Pick<Build, 'id' | 'status' | 'artifactKey' | 'logKey'>>> {
    return this.prisma.build.findMany({
      where: {
        OR: [
          { status: { in: ['succeeded', 'failed', 'canceled'] }, finishedAt: { lt: cutoff } },
          { status: 'expired', purgedAt: null },
        ],
      },
      select: { id: true, status: true, artifactKey: true, logKey: true },
      orderBy: { finishedAt: 'asc' },
      take: limit,
    });
  }

  /** Rows not expired that share an artifact object (see artifact-lock.ts for when this is safe to ask). */
  liveBuildsSharing(artifactKey: string): Promise<number> {
    return this.prisma.build.count({ where: { artifactKey, status: { not: 'expired' } } });
  }

  /** Retention: an artifact object is deleted, so no project is charged for it any more. */
  async releaseArtifactCharge(key: string): Promise<void> {
    await this.prisma.projectObject.deleteMany({ where: { key } });
  }

  /**
   * Retention: keys of context objects charged to a project none of whose builds created since
   * `cutoff`, nor any unfinished one, uses them (rechecked under the lock by releaseContextCharges).
   */
  async contextChargesToRelease(cutoff: Date, limit: number): Promise<string[]> {
    const rows = await this.prisma.$queryRaw<Array<{ key: string }>>`
      SELECT DISTINCT o.key FROM "ProjectObject" o
      WHERE o.key LIKE ${`${CONTEXT_KEY_PREFIX}%`} AND ${chargeUnused(cutoff)}
      LIMIT ${limit}`;
    return rows.map((r) => r.key);
  }

  /**
   * Retention: under the context's exclusive lock (an insert naming the context holds it shared,
   * see context-lock.ts, so it either committed and is seen here or charges the project again
   * after), drops the charges for `key` of projects that no longer use it. Returns how many.
   */
  releaseContextCharges(key: string, cutoff: Date): Promise<number> {
    return this.transaction(async (tx) => {
      await lockContextObject(tx, key, 'exclusive');
      return tx.$executeRaw`DELETE FROM "ProjectObject" o WHERE o.key = ${key} AND ${chargeUnused(cutoff)}`;
    });
  }

  /** Retention: this expired row's objects are dealt with. */
  async markPurged(id: string): Promise<void> {
    await this.prisma.build.update({ where: { id }, data: { purgedAt: new Date() } });
  }

  /**
   * Retention: keys of context objects some build created before `cutoff` used, not known to be
   * deleted, that no recent or unfinished build uses (rechecked under the lock when deleting).
   */
  async unusedContextKeys(cutoff: Date, limit: number): Promise<string[]> {
    const rows = await this.prisma.$queryRaw<Array<{ key: string }>>`
      SELECT DISTINCT b."contextKey" AS key
      FROM "Build" b
      WHERE b."createdAt" < ${cutoff} AND b."contextDeletedAt" IS NULL
        -- Git builds store no context.
        AND b."contextKey" IS NOT NULL
        AND NOT EXISTS (
          SELECT 1 FROM "Build" n
          WHERE n."contextKey" = b."contextKey"
            AND (n."createdAt" >= ${cutoff} OR n.status IN ('queued', 'running')))
      LIMIT ${limit}`;
    return rows.map((r) => r.key);
  }

  /**
   * Retention: under the context's exclusive lock (context-lock.ts), deletes the object with
   * `remove` when no build created since `cutoff` nor any unfinished build uses it, and marks the
   * rows. True when it deleted.
   */
  deleteContextIfUnused(
    key: string,
    cutoff: Date,
    remove: () => Promise<void>,
    timeoutMs: number,
  ): Promise<boolean> {
    return this.transaction(
      async (tx) => {
        await lockContextObject(tx, key, 'exclusive');
        const inUse = await tx.build.count({
          where: {
            contextKey: key,
            OR: [{ createdAt: { gte: cutoff } }, { status: { in: ['queued', 'running'] } }],
          },
        });
        if (inUse > 0) return false;
        await remove();
        await tx.build.updateMany({
          where: { contextKey: key, contextDeletedAt: null },
          data: { contextDeletedAt: new Date() },
        });
        return true;
      },
      { timeoutMs },
    );
  }

  // --- writes: BuildLifecycle's --------------------------------------------------------------

  /**
   * Inserts a queued build in one statement (one round trip, its own transaction). With a context,
   * the statement first takes the context's shared lock (context-lock.ts). A duplicate idempotency
   * key fails with PostgreSQL's unique_violation (see isUniqueViolation). With `maxQueued` (> 0)
   * nothing is inserted (undefined) when the project already has that many queued builds, exactly,
   * however many requests arrive at once.
   */
  insertQueued(input: QueuedBuildInput): Promise<Build>;
  insertQueued(input: QueuedBuildInput, maxQueued: number): Promise<Build | undefined>;
  async insertQueued(input: QueuedBuildInput, maxQueued = 0): Promise<Build | undefined> {
    const columns = [
      newUlid(),
      input.projectId,
      JSON.stringify(input.spec),
      input.requestHash,
      input.idempotencyKey,
      input.cacheKey,
      input.contextDigest ?? null,
      input.contextSize === undefined || input.contextSize === null ? null : input.contextSize.toString(),
      input.contextKey ?? null,
      input.source ?? 'api',
      input.gitUrl ?? null,
      input.gitRef ?? null,
      input.gitCommit ?? null,
      input.triggerId ?? null,
      // The column has no time zone and holds UTC (Prisma's convention).
      new Date().toISOString(),
    ];
    if (maxQueued === 0) {
      const { rows } = await this.sql().query<Build>(
        input.contextKey
          ? {
              name: 'kiln_insert_build_locked',
              text: INSERT_LOCKED,
              values: [CONTEXT_LOCK_CLASS, input.contextKey, ...columns],
              types: prismaRowTypes,
            }
          : { name: 'kiln_insert_build', text: INSERT_PLAIN, values: columns, types: prismaRowTypes },
      );
      return rows[0] as Build;
    }
    // Capped: the project's inserts take turns on its queue lock, and the count is read by the
    // insert, a later statement than the lock, so it sees every insert committed before (a count
    // in the lock's own statement would use a snapshot older than the lock).
    const client = await this.sql().connect();
    try {
      await client.query('BEGIN');
      await client.query({
        name: 'kiln_queue_lock',
        text: 'SELECT pg_advisory_xact_lock($1::int4, hashtext($2))',
        values: [QUEUE_LOCK_CLASS, input.projectId],
      });
      const { rows } = await client.query<Build>(
        input.contextKey
          ? {
              name: 'kiln_insert_build_locked_capped',
              text: INSERT_LOCKED_CAPPED,
              values: [CONTEXT_LOCK_CLASS, input.contextKey, ...columns, maxQueued],
              types: prismaRowTypes,
            }
          : {
              name: 'kiln_insert_build_capped',
              text: INSERT_PLAIN_CAPPED,
              values: [...columns, maxQueued],
              types: prismaRowTypes,
            },
      );
      await client.query('COMMIT');
      return rows[0];
    } catch (err) {
      await client.query('ROLLBACK').catch(() => undefined);
      throw err;
    } finally {
      client.release();
    }
  }

  /** Inserts a row already final (the result cache's), inside the caller's transaction. */
  insertFinal(tx: Tx, data: Prisma.BuildUncheckedCreateInput): Promise<Build> {
    return tx.build.create({ data });
  }

  /**
   * Deletes a queued row nobody was told about (its secrets could not be handed over, its context
   * not stored), and the charge for its context its insert made, as retention would drop it: no
   * other build of the project created since `contextCutoff`, nor an unfinished one, uses that
   * context. Under the context's exclusive lock, as retention takes it: an insert of the same
   * context meanwhile commits first, and keeps it charged. When that cannot be done (the lock
   * held past the timeout, PostgreSQL failing), the row still goes; retention drops the charge.
   */
  async deleteQueued(id: string, contextCutoff: Date): Promise<void> {
    try {
      await this.transaction(
        async (tx) => {
          const row = await tx.build.findFirst({
            where: { id, status: 'queued' },
            select: { projectId: true, contextKey: true },
          });
          if (!row) return;
          if (row.contextKey) await lockContextObject(tx, row.contextKey, 'exclusive');
          const { count } = await tx.build.deleteMany({ where: { id, status: 'queued' } });
          if (count === 0 || !row.contextKey) return;
          await tx.$executeRaw`
            DELETE FROM "ProjectObject" o
            WHERE o."projectId" = ${row.projectId} AND o.key = ${row.contextKey} AND ${chargeUnused(contextCutoff)}`;
        },
        { timeoutMs: DELETE_QUEUED_TIMEOUT_MS },
      );
    } catch {
      await this.prisma.build.deleteMany({ where: { id, status: 'queued' } });
    }
  }

  /**
   * Moves the row to `to` when its status is one of `from` (and it is still the attempt `guard`
   * names); false when it was not. The one conditional UPDATE every transition is made of.
   */
  async moveStatus(
    tx: Tx,
    id: string,
    from: readonly BuildStatusName[],
    to: BuildStatusName,
    change: BuildChange = {},
    guard: AttemptGuard = {},
  ): Promise<boolean> {
    const updated = await tx.build.updateMany({
      where: { id, status: { in: [...from] }, ...guard },
      data: { ...change, status: to },
    });
    return updated.count > 0;
  }

  /** Ends the build's attempts still open (no finishedAt). */
  async endOpenAttempts(tx: Tx, buildId: string, end: AttemptEnd, at = new Date()): Promise<void> {
    await tx.buildAttempt.updateMany({
      where: { buildId, finishedAt: null },
      data: {
        finishedAt: at,
        outcome: end.outcome,
        errorCode: end.errorCode ?? null,
        errorMessage: end.errorMessage ?? null,
      },
    });
  }

  /** How an attempt ended (null: still open, or no such attempt). */
  async attemptOutcome(tx: Tx, attemptId: string): Promise<string | null> {
    const row = await tx.buildAttempt.findUnique({ where: { id: attemptId }, select: { outcome: true } });
    return row?.outcome ?? null;
  }

  /** Ends one attempt, if still open. */
  async endAttempt(tx: Tx, attemptId: string, end: AttemptEnd, at = new Date()): Promise<void> {
    await tx.buildAttempt.updateMany({
      where: { id: attemptId, finishedAt: null },
      data: {
        finishedAt: at,
        outcome: end.outcome,
        errorCode: end.errorCode ?? null,
        errorMessage: end.errorMessage ?? null,
      },
    });
  }

  /** Opens attempt number `attempts` of the row (the count `start` just incremented). */
  async openAttempt(tx: Tx, buildId: string, builder: string, at: Date): Promise<BuildAttempt> {
    const row = await tx.build.findUniqueOrThrow({ where: { id: buildId }, select: { attempts: true } });
    return tx.buildAttempt.create({ data: { buildId, number: row.attempts, builder, startedAt: at } });
  }
}
