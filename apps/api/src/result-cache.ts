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
import { type Build, countBuildEvent, countMinute, type Prisma, type QueuedBuildInput } from '@kiln/core';
import { defaultBuilderPlatform } from './builder-platforms.js';
import type { ApiDeps } from './deps.js';

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
  // Past its retention it is as good as expired: retention is about to delete it.
  const since = new Date(Date.now() - deps.config.retention.days * DAY_MS);
  const source = await deps.builds.resultCacheSource(data.projectId, data.cacheKey, platform, since);
  const answer = source?.artifactKey ? await deps.lifecycle.answerFromCache(data, source) : undefined;
  await countBuildEvent(deps.redis, { kind: 'result-cache', hit: answer !== undefined });
  await countMinute(deps.redis, {
    kind: 'result-cache',
    projectId: data.projectId,
    hit: answer !== undefined,
  });
  return answer;
}
