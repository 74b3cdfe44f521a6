/**
 * Retention: one pass deletes what has outlived KILN_RETENTION_DAYS / KILN_CONTEXT_RETENTION_DAYS.
 *
 * Artifacts and logs. A final build (succeeded, failed, canceled) finished before the cutoff
 * becomes `expired` and its log object is deleted. Its artifact object may be shared with builds
 * answered from the result cache (same artifactKey, never copied), so it is deleted only once no
 * build that is not expired has that key: every row expires on its own clock, and the object
 * goes with the last one. (A result that keeps being reused therefore stays; the cached rows
 * are not expired together with their source, which would pull an artifact from under a build
 * the caller got a moment ago.) A row is `purgedAt` once its part is done; an expired row without
 * it (a delete failed) is tried again by the next pass.
 *
 * The API makes a cached build inside a transaction that holds its source row `FOR SHARE` while
 * the source is still `succeeded`; expiring a row waits for that lock, and the count of live rows
 * sharing the artifact runs after it. So an artifact is never deleted under a cached build made
 * at the same moment.
 *
 * Contexts. A context object (content-addressed, shared by every build of the same upload) is
 * deleted when no build created since the context cutoff uses it and no queued or running build
 * does, under an exclusive advisory lock on its key; the API inserts a build that will read a
 * context under the shared lock (lockContextObject in @kiln/core).
 *
 * Every step is conditional or idempotent: two passes overlapping (two workers) do no harm.
 * `now` is a parameter so tests can look far into the future.
 */
import {
  type Build,
  type Logger,
  lockContextObject,
  logKey,
  type ObjectStorage,
  type PrismaClient,
} from '@kiln/core';

export interface RetentionOptions {
  prisma: PrismaClient;
  storage: ObjectStorage;
  logger: Logger;
  /** Artifacts and logs of builds finished more than this many days ago are deleted. */
  days: number;
  /** Context objects no build created within this many days (nor any unfinished build) uses are deleted. */
  contextDays: number;
  /** Rows (or context keys) per query; default 500. */
  batchSize?: number;
  /** Most batches per kind and pass, so one pass stays bounded; default 100. */
  maxBatches?: number;
}

export interface RetentionReport {
  /** Builds this pass marked expired. */
  expired: string[];
  /** Artifact objects deleted. */
  artifactsDeleted: string[];
  /** Artifact objects of expired builds kept because a live build still shares them. */
  artifactsKept: string[];
  /** Context objects deleted. */
  contextsDeleted: string[];
  /** Deletions that failed (retried by the next pass). */
  failed: number;
}

const DAY_MS = 24 * 3600 * 1000;
const EXPIRABLE = ['succeeded', 'failed', 'canceled'] as const;
/** Storage deletes run inside the context transaction: give them time beyond Prisma's 5 s default. */
const CONTEXT_TX_TIMEOUT_MS = 60_000;

const messageOf = (err: unknown): string => (err instanceof Error ? err.message : String(err));

export async function runRetentionOnce(
  options: RetentionOptions,
  now: Date = new Date(),
): Promise<RetentionReport> {
  const report: RetentionReport = {
    expired: [],
    artifactsDeleted: [],
    artifactsKept: [],
    contextsDeleted: [],
    failed: 0,
  };
  await expireBuilds(options, new Date(now.getTime() - options.days * DAY_MS), report);
  await deleteContexts(options, new Date(now.getTime() - options.contextDays * DAY_MS), report);
  const { logger } = options;
  if (report.expired.length + report.contextsDeleted.length + report.failed > 0) {
    logger.info(
      {
        expired: report.expired.length,
        artifactsDeleted: report.artifactsDeleted.length,
        artifactsKept: report.artifactsKept.length,
        contextsDeleted: report.contextsDeleted.length,
        failed: report.failed,
      },
      'retention pass',
    );
  }
  return report;
}

type ExpiringRow = Pick<Build, 'id' | 'status' | 'artifactKey' | 'logKey'>;

async function expireBuilds(o: RetentionOptions, cutoff: Date, report: RetentionReport): Promise<void> {
  const batchSize = o.batchSize ?? 500;
  for (let batch = 0; batch < (o.maxBatches ?? 100); batch++) {
    const rows = await o.prisma.build.findMany({
      where: {
        OR: [
          { status: { in: [...EXPIRABLE] }, finishedAt: { lt: cutoff } },
          // Expired by an earlier pass whose deletes did not all succeed.
          { status: 'expired', purgedAt: null },
        ],
      },
      select: { id: true, status: true, artifactKey: true, logKey: true },
      orderBy: { finishedAt: 'asc' },
      take: batchSize,
    });
    let purged = 0;
    for (const row of rows) if (await expireOne(o, row, report)) purged++;
    // A batch with no progress is made of rows whose deletes keep failing: the next pass retries.
    if (rows.length < batchSize || purged === 0) return;
  }
}

/** Expires one build and deletes its objects; true when it is done (purgedAt set). */
async function expireOne(o: RetentionOptions, row: ExpiringRow, report: RetentionReport): Promise<boolean> {
  const { prisma, storage, logger } = o;
  if (row.status !== 'expired') {
    // Waits for an API transaction holding this row FOR SHARE (a cache hit being recorded).
    const updated = await prisma.build.updateMany({
      where: { id: row.id, status: { in: [...EXPIRABLE] } },
      data: { status: 'expired' },
    });
    if (updated.count === 0) return false; // another pass got there first
    report.expired.push(row.id);
  }
  try {
    // The stored log is always at logKey(id) (also the log of an attempt that was retried).
    await storage.delete(logKey(row.id));
    if (row.logKey && row.logKey !== logKey(row.id)) await storage.delete(row.logKey);
    if (row.artifactKey) {
      const sharing = await prisma.build.count({
        where: { artifactKey: row.artifactKey, status: { not: 'expired' } },
      });
      if (sharing === 0) {
        await storage.delete(row.artifactKey);
        report.artifactsDeleted.push(row.artifactKey);
      } else {
        report.artifactsKept.push(row.artifactKey);
      }
    }
  } catch (err) {
    report.failed++;
    logger.warn(
      { buildId: row.id, err: messageOf(err) },
      'retention: deleting objects failed; retried next pass',
    );
    return false;
  }
  await prisma.build.update({ where: { id: row.id }, data: { purgedAt: new Date() } });
  return true;
}

async function deleteContexts(o: RetentionOptions, cutoff: Date, report: RetentionReport): Promise<void> {
  const batchSize = o.batchSize ?? 500;
  const tried = new Set<string>();
  for (let batch = 0; batch < (o.maxBatches ?? 100); batch++) {
    // Keys some old build used whose object is not known to be deleted, and that no recent or
    // unfinished build uses (rechecked under the lock below).
    const rows = await o.prisma.$queryRaw<Array<{ key: string }>>`
      SELECT DISTINCT b."contextKey" AS key
      FROM "Build" b
      WHERE b."createdAt" < ${cutoff} AND b."contextDeletedAt" IS NULL
        -- Git builds store no context.
        AND b."contextKey" IS NOT NULL
        AND NOT EXISTS (
          SELECT 1 FROM "Build" n
          WHERE n."contextKey" = b."contextKey"
            AND (n."createdAt" >= ${cutoff} OR n.status IN ('queued', 'running')))
      LIMIT ${batchSize}`;
    const fresh = rows.map((r) => r.key).filter((k) => !tried.has(k));
    for (const key of fresh) {
      tried.add(key);
      await deleteContext(o, key, cutoff, report);
    }
    if (rows.length < batchSize || fresh.length === 0) return;
  }
}

async function deleteContext(
  o: RetentionOptions,
  key: string,
  cutoff: Date,
  report: RetentionReport,
): Promise<void> {
  try {
    const deleted = await o.prisma.$transaction(
      async (tx) => {
        await lockContextObject(tx, key, 'exclusive');
        const inUse = await tx.build.count({
          where: {
            contextKey: key,
            OR: [{ createdAt: { gte: cutoff } }, { status: { in: ['queued', 'running'] } }],
          },
        });
        if (inUse > 0) return false;
        await o.storage.delete(key);
        await tx.build.updateMany({
          where: { contextKey: key, contextDeletedAt: null },
          data: { contextDeletedAt: new Date() },
        });
        return true;
      },
      { timeout: CONTEXT_TX_TIMEOUT_MS },
    );
    if (deleted) report.contextsDeleted.push(key);
  } catch (err) {
    report.failed++;
    o.logger.warn({ key, err: messageOf(err) }, 'retention: deleting a context failed; retried next pass');
  }
}
