/**
 * Per-minute build figures for the dashboard's charts, kept as builds finish (one Redis hash per
 * minute, kept 25 hours): builds finished by status, their durations in the duration histogram's
 * buckets, and result-cache look-ups, for every project together (`all`) and for each project;
 * and, for the operator, the peaks of the queue and builder samples the API takes (`all` only).
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

/** What the API samples (apps/api/src/stats-sampler.ts): builds waiting and running, builder slots used and usable. */
export interface ServiceSample {
  waiting: number;
  running: number;
  slotsUsed: number;
  /** Slots used plus slots a build could take now (healthy builders, not draining). */
  slotsCapacity: number;
}
const SAMPLE_FIELDS = ['waiting', 'running', 'slotsUsed', 'slotsCapacity'] as const;

/**
 * KEYS[1] the minute's hash; ARGV: its TTL, then field/value pairs. Keeps each field's largest
 * value: every API replica samples the same Redis figures, so more replicas add samples, never
 * multiply the figures (an increment would).
 */
const KEEP_PEAKS = `for i = 2, #ARGV, 2 do
  local old = tonumber(redis.call('HGET', KEYS[1], ARGV[i]) or '-1')
  if tonumber(ARGV[i + 1]) > old then redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1]) end
end
redis.call('EXPIRE', KEYS[1], ARGV[1])
return 1`;

/** Folds one sample into the current minute's peaks. */
export async function recordSample(redis: Redis, sample: ServiceSample): Promise<void> {
  const args = SAMPLE_FIELDS.flatMap((f) => [`${ALL}|peak|${f}`, String(sample[f])]);
  await redis.eval(KEEP_PEAKS, 1, minuteStatsKey(minuteOf(Date.now())), KEEP_SECONDS, ...args);
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

/** The last `minutes` minutes' hashes, oldest first, in one pipeline. */
async function readMinutes(
  redis: Redis,
  minutes: number,
): Promise<{ at: string; hash: Record<string, string> }[]> {
  const last = minuteOf(Date.now());
  const first = last - minutes + 1;
  const pipeline = redis.pipeline();
  for (let m = first; m <= last; m++) pipeline.hgetall(minuteStatsKey(m));
  const hashes = (await pipeline.exec()) ?? [];
  return hashes.map(([err, value], i) => {
    if (err) throw err;
    return {
      at: new Date((first + i) * 60_000).toISOString(),
      hash: (value ?? {}) as Record<string, string>,
    };
  });
}

function statsOf(at: string, hash: Record<string, string>, scope: string): MinuteStats {
  const finished: Record<string, number> = {};
  const durations = new Array<number>(DURATION_BUCKETS.length + 1).fill(0);
  for (const [field, n] of Object.entries(hash)) {
    const [fieldScope, kind, name] = field.split('|');
    if (fieldScope !== scope || name === undefined) continue;
    if (kind === 'finished') finished[name] = Number(n);
    else if (kind === 'duration') durations[Number(name)] = Number(n);
  }
  return {
    at,
    finished,
    durationP50: bucketQuantile(durations, 0.5),
    durationP90: bucketQuantile(durations, 0.9),
    cacheHits: Number(hash[`${scope}|cache|hit`] ?? 0),
    cacheMisses: Number(hash[`${scope}|cache|miss`] ?? 0),
  };
}

/** The last `minutes` minutes (oldest first) for one project, or for all with `projectId` undefined. */
export async function readMinuteStats(
  redis: Redis,
  minutes: number,
  projectId?: string,
): Promise<MinuteStats[]> {
  return (await readMinutes(redis, minutes)).map(({ at, hash }) => statsOf(at, hash, projectId ?? ALL));
}

/** A minute for the operator: every project's builds, and the peaks of the samples (null: none taken). */
export type OperatorMinute = MinuteStats & { [F in (typeof SAMPLE_FIELDS)[number]]: number | null };

/** One project's builds over the whole window. */
export interface ProjectTotals {
  projectId: string;
  finished: Record<string, number>;
  cacheHits: number;
  cacheMisses: number;
}

/** The operator's view of the last `minutes` minutes: every project together with the samples, and each project's totals. */
export async function readOperatorStats(
  redis: Redis,
  minutes: number,
): Promise<{ minutes: OperatorMinute[]; projects: ProjectTotals[] }> {
  const read = await readMinutes(redis, minutes);
  const projects = new Map<string, ProjectTotals>();
  for (const { hash } of read) {
    for (const [field, n] of Object.entries(hash)) {
      const [scope, kind, name] = field.split('|');
      if (scope === undefined || scope === ALL || name === undefined) continue;
      let totals = projects.get(scope);
      if (!totals) {
        totals = { projectId: scope, finished: {}, cacheHits: 0, cacheMisses: 0 };
        projects.set(scope, totals);
      }
      if (kind === 'finished') totals.finished[name] = (totals.finished[name] ?? 0) + Number(n);
      else if (kind === 'cache' && name === 'hit') totals.cacheHits += Number(n);
      else if (kind === 'cache' && name === 'miss') totals.cacheMisses += Number(n);
    }
  }
  return {
    minutes: read.map(({ at, hash }) => {
      const peak = (f: (typeof SAMPLE_FIELDS)[number]) => {
        const v = hash[`${ALL}|peak|${f}`];
        return v === undefined ? null : Number(v);
      };
      return {
        ...statsOf(at, hash, ALL),
        waiting: peak('waiting'),
        running: peak('running'),
        slotsUsed: peak('slotsUsed'),
        slotsCapacity: peak('slotsCapacity'),
      };
    }),
    projects: [...projects.values()],
  };
}
