// Interleaved A/B sampling shared by the benchmarks (measure.mjs, service-measure.mjs).

import { stats } from './stats.mjs';

/**
 * Interleaved runs: one warm-up of each side, then pairs, the first side first in each pair.
 * `once(side, i)` performs one timed run and returns its record (with `wall_s` and
 * `other_cpu_s`: CPU used meanwhile by processes outside the ones under test).
 *
 * The machine may be shared: with `retryBusy`, a pair during which other processes used
 * more than `busyMax` of a core (on average, in either run; and more than `busyFloorS` CPU
 * seconds, so that clock-tick noise does not disqualify very short runs) is kept in the record but
 * marked, and another pair is taken, until `samples` quiet pairs or 2 x `samples` pairs in
 * all. Medians are over the quiet pairs when there are at least 3, else over every pair.
 *
 * `describe(record)` gives the details logged after each run; `beforeRun()` is awaited
 * before every run (e.g. to wait until another benchmark has finished).
 */
export async function interleaved(
  name,
  once,
  {
    sides = ['docker', 'bkctl'],
    samples = 5,
    retryBusy = false,
    busyMax = 0.25,
    busyFloorS = 0,
    log = () => {},
    describe = () => '',
    beforeRun = async () => {},
  } = {},
) {
  const runs = Object.fromEntries(sides.map((s) => [s, []]));
  const quiet = Object.fromEntries(sides.map((s) => [s, []]));
  const warmup = {};
  for (const side of sides) {
    await beforeRun();
    warmup[side] = await once(side, 'warmup');
    log(`${name}: warm-up ${side} ${warmup[side].wall_s}s`);
  }
  const maxPairs = retryBusy ? 2 * samples : samples;
  let pairs = 0;
  while (pairs < maxPairs && (retryBusy ? quiet[sides[0]].length : pairs) < samples) {
    pairs++;
    const pair = {};
    for (const side of sides) {
      await beforeRun();
      const r = await once(side, pairs);
      if (retryBusy) r.busy_machine = r.other_cpu_s > Math.max(busyMax * r.wall_s, busyFloorS);
      runs[side].push(r);
      pair[side] = r;
      const more = describe(r);
      log(
        `${name}: ${side} #${pairs} ${r.wall_s}s${more ? ` (${more})` : ''}${r.busy_machine ? ' [busy machine]' : ''}`,
      );
    }
    if (retryBusy && sides.every((s) => !pair[s].busy_machine)) {
      for (const s of sides) quiet[s].push(pair[s]);
    } else if (retryBusy && pairs < maxPairs) {
      log(`${name}: pair #${pairs} ran while other processes were busy; taking another`);
    }
  }
  const useQuiet = retryBusy && quiet[sides[0]].length >= 3;
  return {
    warmup,
    runs,
    used: useQuiet ? quiet : runs,
    pairs: {
      taken: pairs,
      quiet: retryBusy ? quiet[sides[0]].length : null,
      medians_over: useQuiet ? 'quiet pairs' : 'all pairs',
      busy_threshold: retryBusy
        ? `other processes' CPU > ${busyMax} x wall${busyFloorS ? ` and > ${busyFloorS} s` : ''} in either run of the pair`
        : null,
    },
  };
}

/** All samples of `key`; median/min/max over `used` (the quiet pairs when there are enough). */
export function side(runs, key, used = runs) {
  const samples = runs.map((r) => r[key]);
  const out = { samples, ...stats(used.map((r) => r[key])) };
  if (used !== runs) {
    out.busy_machine = runs.map((r) => r.busy_machine);
    out.n_used = used.length;
    out.median_all_samples = stats(samples).median;
  }
  return out;
}
