import {
  AppError,
  type BuilderCapabilities,
  type BuildSpec,
  builderCapabilitiesKey,
  parseBuilderCapabilities,
  specRequirements,
  unmetRequirements,
} from '@kiln/core';
import type { ApiDeps } from './deps.js';
import { redactAddress } from './redact.js';

/**
 * The capabilities the workers published for each configured builder (undefined: none yet), in
 * configuration order. The API does not talk to builders.
 */
export async function publishedCapabilities(deps: ApiDeps): Promise<Array<BuilderCapabilities | undefined>> {
  const addresses = deps.config.builders.map((b) => b.address);
  const raw = await deps.redis.hmget(builderCapabilitiesKey(), ...addresses);
  return raw.map(parseBuilderCapabilities);
}

/**
 * Refuses (no_capable_builder, 422) a spec that no configured builder can serve, so that it fails
 * at POST rather than in a worker. Only when every builder's capabilities are known: a builder
 * no worker has checked yet may be capable, and then the worker decides (it fails the build
 * with the same code once it knows). When Redis does not answer, the worker decides too.
 */
export async function checkSomeBuilderCanServe(deps: ApiDeps, spec: BuildSpec): Promise<void> {
  const requires = specRequirements(spec);
  if (requires.platforms.length === 0 && requires.features.length === 0) return;
  let caps: Array<BuilderCapabilities | undefined>;
  try {
    caps = await publishedCapabilities(deps);
  } catch (err) {
    deps.logger.warn({ err: (err as Error).message }, 'could not read the builder capabilities');
    return;
  }
  const unmet: string[] = [];
  for (const [i, c] of caps.entries()) {
    if (!c) return;
    const lacks = unmetRequirements(c, requires);
    if (lacks.length === 0) return;
    unmet.push(
      `${redactAddress(deps.config.builders[i]?.address ?? '')} (BuildKit ${c.version ?? '< 0.11'}) lacks ${lacks.join(', ')}`,
    );
  }
  throw new AppError(
    'no_capable_builder',
    `no builder of this service can serve this build: ${unmet.join('; ')}`,
  );
}
