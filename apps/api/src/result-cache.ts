/**
 * The result cache: a new build whose context and spec match (cacheKey, see resultCacheKey in
 * @kiln/core: output.dest and noCache take no part) an earlier `succeeded` build of the same
 * project, built for the same platform and not past its retention, is answered at once. Its row
 * is inserted already `succeeded`, with startedAt = finishedAt = now, no job, `cachedFromId`
 * naming the build that ran, and the very artifact object of that build (same artifactKey, never
 * copied; retention deletes it only once no live build shares it, see the worker's retention.ts).
 *
 * Platform: a spec with `platform` matches builds recorded with that platform; a spec without one
 * matches builds recorded with the default platform of the configured builders
 * (defaultBuilderPlatform), or nothing when that is not known for sure.
 */
import { type Build, type Prisma, type QueuedBuildInput, recordBuildEvents } from '@kiln/core';
import { defaultBuilderPlatform } from './builder-platforms.js';
import type { ApiDeps } from './deps.js';
import { enqueueEvents } from './events.js';

const DAY_MS = 24 * 3600 * 1000;

/**
 * A build row as createBuild inserts it, before its status (cacheKey is null for a build the
 * cache cannot answer: a git build of a branch, not a commit).
 */
export type NewBuildData = QueuedBuildInput & { spec: Prisma.InputJsonValue };

/** Inserts a cached, already succeeded build when an earlier one can serve; undefined otherwise. */
export async function reuseResult(
  deps: ApiDeps,
  data: NewBuildData,
  requestedPlatform: string | undefined,
): Promise<Build | undefined> {
  if (data.cacheKey === null) return undefined;
  const platform = requestedPlatform ?? (await defaultBuilderPlatform(deps));
  if (!platform) return undefined;
  const now = new Date();
  // Past its retention it is as good as expired: retention is about to delete it.
  const since = new Date(now.getTime() - deps.config.retention.days * DAY_MS);
  const source = await deps.queries.resultCacheSource(data.projectId, data.cacheKey, platform, since);
  if (!source?.artifactKey) return undefined;
  const { artifactKey, artifactSize, artifactDigest } = source;
  const inserted = await deps.db.$transaction(async (tx) => {
    // Holds the source while it is still succeeded, so retention cannot expire it (and delete the
    // object it shares) before this row is in; retention waits for this lock.
    const held = await tx.$queryRaw<Array<{ id: string }>>`
      SELECT id FROM "Build" WHERE id = ${source.id} AND status = 'succeeded' FOR SHARE`;
    if (held.length === 0) return undefined;
    const build = await tx.build.create({
      data: {
        ...data,
        status: 'succeeded',
        // The build that ran, also when the match was itself a cached build.
        cachedFromId: source.cachedFromId ?? source.id,
        platform: source.platform,
        artifactKey,
        artifactSize,
        artifactDigest,
        createdAt: now,
        startedAt: now,
        finishedAt: now,
      },
    });
    // Born final: its completion events are recorded with it.
    return { build, deliveries: await recordBuildEvents(tx, build.id) };
  });
  if (!inserted) return undefined;
  await enqueueEvents(deps, inserted.deliveries);
  return inserted.build;
}
