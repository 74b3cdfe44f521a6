/**
 * Samples what the operator's charts draw over time and no event counts: builds waiting and
 * running, builder slots used and usable. Every KILN_STATS_SAMPLE_SECONDS, each API replica reads
 * the same Redis figures /metrics reads (BullMQ's job counts, the lease ZSETs) and folds them into
 * the current minute's peaks (@kiln/core's recordSample keeps the largest), so replicas add
 * samples without multiplying figures. Sampling rather than counting enqueue/lease/release events:
 * those happen in several processes and a lost event would skew a running total for good, while a
 * sample is right again at the next one.
 */
import { recordSample } from '@kiln/core';
import { builderFigures, queueFigures } from './builder-metrics.js';
import type { ApiDeps } from './deps.js';

export async function sampleOnce(deps: ApiDeps): Promise<void> {
  const [queue, builders] = await Promise.all([queueFigures(deps), builderFigures(deps)]);
  await recordSample(deps.redis, {
    ...queue,
    slotsUsed: builders.slotsUsed,
    slotsCapacity: builders.slotsUsed + builders.slotsFree,
  });
}

/** Samples now and every `statsSampleSeconds`; returns the function that stops it (after the sample under way). */
export function startStatsSampler(deps: ApiDeps): () => Promise<void> {
  let running: Promise<void> | undefined;
  const tick = () => {
    // One sample at a time: a slow Redis must not pile them up.
    running ??= sampleOnce(deps)
      .catch((err: Error) => deps.logger.warn({ err }, 'stats sample failed'))
      .finally(() => {
        running = undefined;
      });
  };
  tick();
  const timer = setInterval(tick, deps.config.statsSampleSeconds * 1000);
  timer.unref();
  return async () => {
    clearInterval(timer);
    await running;
  };
}
