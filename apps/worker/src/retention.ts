/**
 * Retention: one pass deletes what has outlived KILN_RETENTION_DAYS / KILN_CONTEXT_RETENTION_DAYS.
 *
 * Artifacts and logs. A final build (succeeded, failed, canceled) finished before the cutoff
 * becomes `expired` and its log object is deleted. Its artifact object may be shared with builds
 * answered from the result cache (same artifactKey, never copied), so it is deleted only once no
 * build that is not expired has that key: every row expires on its own clock, and the object
 * goes with the last one. (A result that keeps being reused therefore stays; the cached rows
 * are not expired together with their source, which would pull an artifact from under a build
 * the caller got a moment ago.) Whatever else is below the build's own artifact prefix goes too:
 * the artifacts of attempts whose final write never landed (a run cut off from its database or
 * its lease), which no row names. A row is `purgedAt` once its part is done; an expired row
 * without it (a delete failed) is tried again by the next pass.
 *
 * An artifact is never deleted under a cached build made at the same moment: see the protocol in
 * @kiln/core's builds/artifact-lock.ts.
 *
 * Contexts. A context object (content-addressed, shared by every build of the same upload) is
 * deleted when no build created since the context cutoff uses it and no queued or running build
 * does, under the context lock (@kiln/core's builds/context-lock.ts).
 *
 * Stored bytes. A project is charged for a context while one of its builds created since the
 * context cutoff, or unfinished, uses it (whoever else shares the object), and for an artifact
 * until the object is deleted; the charges not owed any more are dropped here, contexts under
 * the context lock.
 *
 * Every step is conditional or idempotent: two passes overlapping (two workers) do no harm.
 * `now` is a parameter so tests can look far into the future.
 */
import {
  artifactPrefix,
  BUILD_CACHE_FULL,
  BUILD_CACHE_ROOT,
  type Build,
  type BuildLifecycle,
  type Logger,
  logKey,
  type ObjectStorage,
  provenanceKey,
  stepsKey,
} from '@kiln/core';

export interface RetentionOptions {
  /** expire; its repository reads the rows and marks them. */
  lifecycle: BuildLifecycle;
  storage: ObjectStorage;
  logger: Logger;
  /** Artifacts and logs of builds finished more than this many days ago are deleted. */
  days: number;
  /** Context objects no build created within this many days (nor any unfinished build) uses are deleted. */
  contextDays: number;
  /**
   * The shared build cache's bound per project (bytes; 0: none). A project's cache past it, or
   * unused for `days`, is deleted whole: its next build exports a fresh one. Undefined: the
   * cache is off here; what earlier runs left of it still goes once unused for `days` (not at
   * once: during a rollout another worker may still use it).
   */
  buildCacheMaxBytes?: number;
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
  /** Projects whose shared build cache was dropped (too big or unused). */
  cachesDropped: string[];
  /** Charges for contexts dropped from projects that no longer use them (stored bytes). */
  contextChargesReleased: number;
  /** Webhook receipts (HookDelivery) older than the builds' retention, deleted. */
  hookReceiptsDeleted: number;
  /** Deletions that failed (retried by the next pass). */
  failed: number;
}

const DAY_MS = 24 * 3600 * 1000;
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
    cachesDropped: [],
    contextChargesReleased: 0,
    hookReceiptsDeleted: 0,
    failed: 0,
  };
  const buildCutoff = new Date(now.getTime() - options.days * DAY_MS);
  await expireBuilds(options, buildCutoff, report);
  const contextCutoff = new Date(now.getTime() - options.contextDays * DAY_MS);
  await deleteContexts(options, contextCutoff, report);
  await releaseContextCharges(options, contextCutoff, report);
  await dropBuildCaches(options, options.buildCacheMaxBytes, buildCutoff, report);
  await deleteHookReceipts(options, buildCutoff, report);
  const { logger } = options;
  if (
    report.expired.length +
      report.contextsDeleted.length +
      report.cachesDropped.length +
      report.contextChargesReleased +
      report.hookReceiptsDeleted +
      report.failed >
    0
  ) {
    logger.info(
      {
        expired: report.expired.length,
        artifactsDeleted: report.artifactsDeleted.length,
        artifactsKept: report.artifactsKept.length,
        contextsDeleted: report.contextsDeleted.length,
        cachesDropped: report.cachesDropped,
        contextChargesReleased: report.contextChargesReleased,
        hookReceiptsDeleted: report.hookReceiptsDeleted,
        failed: report.failed,
      },
      'retention pass',
    );
  }
  return report;
}

/**
 * Drops the shared build cache of every project whose cache exceeds `maxBytes`, was marked full
 * (BUILD_CACHE_FULL: past its bound, which may be the project's quota), or was last written
 * before `cutoff`. Whole, not trimmed: BuildKit's cache manifest names its blobs, and a manifest
 * missing some would fail imports rather than rebuild. A build exporting meanwhile may lose what
 * it just wrote, and record a manifest naming deleted blobs: the next build does not import that
 * one (build-cache-store's latestCacheManifest checks every blob first) and exports again.
 */
async function dropBuildCaches(
  o: RetentionOptions,
  maxBytes: number | undefined,
  cutoff: Date,
  report: RetentionReport,
) {
  // Sums only: every project's keys at once could be millions (mode=max caches of many projects).
  const projects = new Map<string, { bytes: number; newest: number; full: boolean }>();
  for await (const object of o.storage.list(BUILD_CACHE_ROOT)) {
    const [project = '', ...rest] = object.key.slice(BUILD_CACHE_ROOT.length).split('/');
    const entry = projects.get(project) ?? { bytes: 0, newest: 0, full: false };
    if (rest.join('/') === BUILD_CACHE_FULL) entry.full = true;
    entry.bytes += object.size;
    entry.newest = Math.max(entry.newest, object.lastModified.getTime());
    projects.set(project, entry);
  }
  for (const [project, entry] of projects) {
    const overBound = maxBytes !== undefined && maxBytes > 0 && entry.bytes > maxBytes;
    const drop = entry.full || overBound || entry.newest < cutoff.getTime();
    if (!drop) continue;
    // Manifests first (`latest.json`, S3's `manifests/`): a pass cut short leaves blobs that no
    // manifest names, never a manifest naming blobs that are gone, which every import would trip
    // on. The full mark last: while it stands, no build exports into what is being deleted.
    const order = (key: string) =>
      key.endsWith(`/${BUILD_CACHE_FULL}`) ? 2 : key.includes('/blobs/') ? 1 : 0;
    try {
      const keys: string[] = [];
      for await (const object of o.storage.list(`${BUILD_CACHE_ROOT}${project}/`)) keys.push(object.key);
      keys.sort((a, b) => order(a) - order(b));
      for (const key of keys) await o.storage.delete(key);
      report.cachesDropped.push(project);
    } catch (err) {
      report.failed++;
      o.logger.warn({ project, err: messageOf(err) }, 'dropping a build cache failed (retried next pass)');
    }
  }
}

type ExpiringRow = Pick<Build, 'id' | 'status' | 'artifactKey' | 'logKey'>;

async function expireBuilds(o: RetentionOptions, cutoff: Date, report: RetentionReport): Promise<void> {
  const batchSize = o.batchSize ?? 500;
  for (let batch = 0; batch < (o.maxBatches ?? 100); batch++) {
    // Also rows expired by an earlier pass whose deletes did not all succeed.
    const rows = await o.lifecycle.repo.expiring(cutoff, batchSize);
    let purged = 0;
    for (const row of rows) if (await expireOne(o, row, report)) purged++;
    // A batch with no progress is made of rows whose deletes keep failing: the next pass retries.
    if (rows.length < batchSize || purged === 0) return;
  }
}

/** Expires one build and deletes its objects; true when it is done (purgedAt set). */
async function expireOne(o: RetentionOptions, row: ExpiringRow, report: RetentionReport): Promise<boolean> {
  const { lifecycle, storage, logger } = o;
  if (row.status !== 'expired') {
    // Waits for an API transaction holding this row FOR SHARE (a cache hit being recorded).
    if (!(await lifecycle.expire(row.id))) return false; // another pass got there first
    report.expired.push(row.id);
  }
  try {
    // The stored log is always at logKey(id) (also the log of an attempt that was retried).
    await storage.delete(logKey(row.id));
    await storage.delete(stepsKey(row.id));
    if (row.logKey && row.logKey !== logKey(row.id)) await storage.delete(row.logKey);
    const kept = new Set<string>();
    if (row.artifactKey) {
      const sharing = await lifecycle.repo.liveBuildsSharing(row.artifactKey);
      if (sharing === 0) {
        await storage.delete(row.artifactKey);
        // Kiln's copy of its provenance, when the build asked for one (deleting nothing is fine).
        await storage.delete(provenanceKey(row.artifactKey));
        await lifecycle.repo.releaseArtifactCharge(row.artifactKey);
        report.artifactsDeleted.push(row.artifactKey);
      } else {
        report.artifactsKept.push(row.artifactKey);
        kept.add(row.artifactKey).add(provenanceKey(row.artifactKey));
      }
    }
    for await (const object of storage.list(artifactPrefix(row.id))) {
      if (kept.has(object.key)) continue;
      await storage.delete(object.key);
      report.artifactsDeleted.push(object.key);
    }
  } catch (err) {
    report.failed++;
    logger.warn(
      { buildId: row.id, err: messageOf(err) },
      'retention: deleting objects failed; retried next pass',
    );
    return false;
  }
  await lifecycle.repo.markPurged(row.id);
  return true;
}

async function deleteContexts(o: RetentionOptions, cutoff: Date, report: RetentionReport): Promise<void> {
  // Keys some old build used whose object is not known to be deleted, and that no recent or
  // unfinished build uses (rechecked under the lock in deleteContext).
  await forEachKey(
    o,
    (limit) => o.lifecycle.repo.unusedContextKeys(cutoff, limit),
    (key) => deleteContext(o, key, cutoff, report),
  );
}

async function releaseContextCharges(
  o: RetentionOptions,
  cutoff: Date,
  report: RetentionReport,
): Promise<void> {
  await forEachKey(
    o,
    (limit) => o.lifecycle.repo.contextChargesToRelease(cutoff, limit),
    async (key) => {
      try {
        report.contextChargesReleased += await o.lifecycle.repo.releaseContextCharges(key, cutoff);
      } catch (err) {
        report.failed++;
        o.logger.warn({ key, err: messageOf(err) }, 'retention: releasing context charges failed');
      }
    },
  );
}

/**
 * Webhook receipts are what tells a redelivered push from a new one; GitHub's signed push time
 * refuses old ones anyway (KILN_WEBHOOK_MAX_AGE_SECONDS), so they are kept as long as builds,
 * not for ever: each verified delivery adds one, up to a repository's rate limit a minute.
 */
async function deleteHookReceipts(o: RetentionOptions, cutoff: Date, report: RetentionReport): Promise<void> {
  const batchSize = o.batchSize ?? 500;
  try {
    for (let batch = 0; batch < (o.maxBatches ?? 100); batch++) {
      const deleted = await o.lifecycle.repo.deleteHookReceiptsBefore(cutoff, batchSize);
      report.hookReceiptsDeleted += deleted;
      if (deleted < batchSize) return;
    }
  } catch (err) {
    report.failed++;
    o.logger.warn({ err: messageOf(err) }, 'retention: deleting webhook receipts failed');
  }
}

/** Batches of keys from `next` to `handle`, each key once per pass, until a batch brings nothing new. */
async function forEachKey(
  o: RetentionOptions,
  next: (limit: number) => Promise<string[]>,
  handle: (key: string) => Promise<void>,
): Promise<void> {
  const batchSize = o.batchSize ?? 500;
  const tried = new Set<string>();
  for (let batch = 0; batch < (o.maxBatches ?? 100); batch++) {
    const keys = await next(batchSize);
    const fresh = keys.filter((k) => !tried.has(k));
    for (const key of fresh) {
      tried.add(key);
      await handle(key);
    }
    if (keys.length < batchSize || fresh.length === 0) return;
  }
}

async function deleteContext(
  o: RetentionOptions,
  key: string,
  cutoff: Date,
  report: RetentionReport,
): Promise<void> {
  try {
    const deleted = await o.lifecycle.repo.deleteContextIfUnused(
      key,
      cutoff,
      () => o.storage.delete(key),
      CONTEXT_TX_TIMEOUT_MS,
    );
    if (deleted) report.contextsDeleted.push(key);
  } catch (err) {
    report.failed++;
    o.logger.warn({ key, err: messageOf(err) }, 'retention: deleting a context failed; retried next pass');
  }
}
