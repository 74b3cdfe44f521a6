import { builderPlatformsKey } from '@kiln/core';
import { currentBuilders } from './builder-members.js';
import type { ApiDeps } from './deps.js';

/**
 * The platform a build without `platform` would be built for: the default platform of the
 * builders (currentBuilders), as the workers publish it in Redis (the API does not talk to builders).
 * Only when every configured builder has published one and they all agree: in a mixed pool the
 * build could land on either kind, and before any worker has checked its builders nothing is
 * known. Undefined then (and when Redis does not answer): the caller does not reuse a result.
 */
export async function defaultBuilderPlatform(deps: ApiDeps): Promise<string | undefined> {
  try {
    const addresses = (await currentBuilders(deps)).map((b) => b.address);
    const platforms = await deps.redis.hmget(builderPlatformsKey(), ...addresses);
    const first = platforms[0];
    return first && platforms.every((p) => p === first) ? first : undefined;
  } catch (err) {
    deps.logger.warn({ err: (err as Error).message }, 'could not read the builder platforms');
    return undefined;
  }
}
