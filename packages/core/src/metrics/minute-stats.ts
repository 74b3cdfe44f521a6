/**
 * Per-minute build figures for the dashboard's charts, kept as builds finish (one Redis hash per
 * minute, kept 25 hours): builds finished by status, their durations in the duration histogram's
 * buckets, and result-cache look-ups, for every project together (`all`) and for each project.
 * The charts read at most 24 × 60 hashes in one pipeline; nothing is scanned.
 */
import type { Redis } from 'ioredis';
import { BUILD_DURATION_BUCKETS } from './buckets.js';
import { bucketIndex } from './histograms.js';

const KEEP_SECONDS = 25 * 3600;
const DURATION_BUCKETS = BUILD_DURATION_BUCKETS;
const ALL = 'all';

export const minuteStatsKey = (minute: number, prefix = 'kiln') => `${prefix}:minute-stats:${minute}`;
const minuteOf = (ms: number) => Math.floor(ms / 60_000);

type MinuteEvent =
  | { kind: 'finished'; projectId: string; status: string; seconds: number | undefined }
  | { kind: 'result-cache'; projectId: string; hit: boolean };

/** Adds one event to the current minute; never throws. */
export async function countMinute(redis: Redis, event: MinuteEvent): Promise<void> {
  const key = minuteStatsKey(minuteOf(Date.now()));
  const multi = redis.multi();
  for (const scope of [ALL, event.projectId]) {
    if (event.kind === 'result-cache') multi.hincrby(key, `${scope}|cache|${event.hit ? 'hit' : 'miss'}`, 1);
    else {
      multi.hincrby(key, `${scope}|finished|${event.status}`, 1);
      if (event.seconds !== undefined) {
        multi.hincrby(key, `${scope}|duration|${bucketIndex(DURATION_BUCKETS, event.seconds)}`, 1);
      }
    }
  }
  await multi
    .expire(key, KEEP_SECONDS)
    .exec()
    .catch(() => undefined);
}

export interface MinuteStats {
  /** The minute's start, ISO 8601. */
  at: string;
  finished: Record<string, number>;
  /** Upper bounds (s) of the buckets holding the 50th and 90th percentile durations; null with no builds. */
  durationP50: number | null;
  durationP90: number | null;
  cacheHits: number;
  cacheMisses: number;
}

/** The upper bound of the bucket holding quantile `q` of `counts` (+Inf as the last bound × 2). */
export function bucketQuantile(counts: readonly number[], q: number): number | null {
  const total = counts.reduce((a, b) => a + b, 0);
  if (total === 0) return null;
  let seen = 0;
  for (let i = 0; i < counts.length; i++) {
    seen += counts[i] ?? 0;
    if (seen >= q * total) return DURATION_BUCKETS[i] ?? (DURATION_BUCKETS.at(-1) as number) * 2;
  }
  return null;
}

/** The last `minutes` minutes (oldest first) for one project, or for all with `projectId` undefined. */
export async function readMinuteStats(
  redis: Redis,
  minutes: number,
  projectId?: string,
): Promise<MinuteStats[]> {
  const scope = projectId ?? ALL;
  const last = minuteOf(Date.now());
  const first = last - minutes + 1;
  const pipeline = redis.pipeline();
  for (let m = first; m <= last; m++) pipeline.hgetall(minuteStatsKey(m));
  const hashes = (await pipeline.exec()) ?? [];
  return hashes.map(([, value], i) => {
    const hash = (value ?? {}) as Record<string, string>;
    const finished: Record<string, number> = {};
    const durations = new Array<number>(DURATION_BUCKETS.length + 1).fill(0);
    for (const [field, n] of Object.entries(hash)) {
      const [fieldScope, kind, name] = field.split('|');
      if (fieldScope !== scope || name === undefined) continue;
      if (kind === 'finished') finished[name] = Number(n);
      else if (kind === 'duration') durations[Number(name)] = Number(n);
    }
    return {
      at: new Date((first + i) * 60_000).toISOString(),
      finished,
      durationP50: bucketQuantile(durations, 0.5),
      durationP90: bucketQuantile(durations, 0.9),
      cacheHits: Number(hash[`${scope}|cache|hit`] ?? 0),
      cacheMisses: Number(hash[`${scope}|cache|miss`] ?? 0),
    };
  });
}
