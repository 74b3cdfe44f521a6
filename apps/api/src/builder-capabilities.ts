import {
  AppError,
  type BuilderCapabilities,
  type BuildSpec,
  builderCapabilitiesKey,
  parseBuilderCapabilities,
  redactAddress,
  specRequirements,
  unmetRequirements,
} from '@kiln/core';
import { currentBuilders } from './builder-members.js';
import type { ApiDeps } from './deps.js';

/**
 * The capabilities the workers published for each builder (undefined: none yet), beside its
 * address. The API does not talk to builders.
 */
export async function publishedCapabilities(
  deps: ApiDeps,
): Promise<Array<{ address: string; capabilities: BuilderCapabilities | undefined }>> {
  const addresses = (await currentBuilders(deps)).map((b) => b.address);
  const raw = await deps.redis.hmget(builderCapabilitiesKey(), ...addresses);
  return addresses.map((address, i) => ({ address, capabilities: parseBuilderCapabilities(raw[i]) }));
}

/**
 * Refuses (no_capable_builder, 422) a spec that no configured builder can serve, so that it fails
 * at POST rather than in a worker. Only when every builder's capabilities are known: a builder
 * no worker has checked yet may be capable, and then the worker decides (it fails the build
 * with the same code once it knows). When Redis does not answer, the worker decides too.
 */
export async function checkSomeBuilderCanServe(
  deps: ApiDeps,
  spec: BuildSpec,
  source: { gitSubdir?: boolean } = {},
): Promise<void> {
  const requires = specRequirements(spec, source);
  if (requires.platforms.length === 0 && requires.features.length === 0) return;
  let caps: Awaited<ReturnType<typeof publishedCapabilities>>;
  try {
    caps = await publishedCapabilities(deps);
  } catch (err) {
    deps.logger.warn({ err: (err as Error).message }, 'could not read the builder capabilities');
    return;
  }
  const unmet: string[] = [];
  for (const { address, capabilities: c } of caps) {
    if (!c) return;
    const lacks = unmetRequirements(c, requires);
    if (lacks.length === 0) return;
    unmet.push(`${redactAddress(address)} (BuildKit ${c.version ?? '< 0.11'}) lacks ${lacks.join(', ')}`);
  }
  throw new AppError(
    'no_capable_builder',
    `no builder of this service can serve this build: ${unmet.join('; ')}`,
  );
}
