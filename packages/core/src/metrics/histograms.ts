/**
 * Histograms whose buckets live in one Redis hash. The worker observes builds and the API serves
 * /metrics: with the counts in Redis, any API replica answers for every worker, a restarted worker
 * loses nothing, and the worker needs no port of its own (like the build counters, counters.ts).
 * Each observation is one MULTI of three increments; a scrape is one HGETALL.
 */
import type { Redis } from 'ioredis';

export interface HistogramSpec {
  name: string;
  help: string;
  labelNames: readonly string[];
  /** Upper bounds, ascending; +Inf is implied. */
  buckets: readonly number[];
}

export const metricHistogramsKey = (prefix = 'kiln') => `${prefix}:metric-histograms`;

// Field: name, label values, then the bucket index, `sum` or `count`, joined by a character no
// label value holds (outcomes, project ids, `other`).
const SEP = '\u001f';

/** The index of the first bucket holding `value`; buckets.length for +Inf. */
export function bucketIndex(buckets: readonly number[], value: number): number {
  const i = buckets.findIndex((upper) => value <= upper);
  return i === -1 ? buckets.length : i;
}

export interface Observation {
  spec: HistogramSpec;
  labels: Readonly<Record<string, string>>;
  value: number;
}

/** Records observations; never throws (a lost sample must not fail a build). */
export async function observeHistograms(
  redis: Redis,
  observations: readonly Observation[],
  prefix?: string,
): Promise<void> {
  if (observations.length === 0) return;
  const key = metricHistogramsKey(prefix);
  const multi = redis.multi();
  for (const { spec, labels, value } of observations) {
    if (!Number.isFinite(value) || value < 0) continue;
    const series = [spec.name, ...spec.labelNames.map((l) => labels[l] ?? '')].join(SEP);
    multi
      .hincrby(key, `${series}${SEP}${bucketIndex(spec.buckets, value)}`, 1)
      .hincrbyfloat(key, `${series}${SEP}sum`, value)
      .hincrby(key, `${series}${SEP}count`, 1);
  }
  await multi.exec().catch(() => undefined);
}

export interface HistogramSeries {
  labels: Record<string, string>;
  /** Cumulative counts, one per bucket and the last for +Inf (equal to count). */
  cumulative: number[];
  sum: number;
  count: number;
}

/** Every series of `specs`, by histogram name. */
export async function readHistograms(
  redis: Redis,
  specs: readonly HistogramSpec[],
  prefix?: string,
): Promise<Map<string, HistogramSeries[]>> {
  const hash = await redis.hgetall(metricHistogramsKey(prefix));
  const byName = new Map(specs.map((s) => [s.name, s]));
  const series = new Map<string, { spec: HistogramSpec; labels: string[]; counts: number[]; sum: number }>();
  for (const [field, raw] of Object.entries(hash)) {
    const parts = field.split(SEP);
    const spec = byName.get(parts[0] ?? '');
    if (!spec || parts.length !== spec.labelNames.length + 2) continue;
    const id = parts.slice(0, -1).join(SEP);
    let s = series.get(id);
    if (!s) {
      s = { spec, labels: parts.slice(1, -1), counts: new Array(spec.buckets.length + 1).fill(0), sum: 0 };
      series.set(id, s);
    }
    const part = parts[parts.length - 1] as string;
    if (part === 'sum') s.sum = Number(raw);
    else if (part !== 'count') s.counts[Number(part)] = Number(raw);
  }
  const result = new Map<string, HistogramSeries[]>(specs.map((s) => [s.name, []]));
  for (const { spec, labels, counts, sum } of series.values()) {
    let running = 0;
    const cumulative = counts.map((n) => {
      running += n;
      return running;
    });
    result.get(spec.name)?.push({
      labels: Object.fromEntries(spec.labelNames.map((l, i) => [l, labels[i] ?? ''])),
      cumulative,
      sum,
      // From the buckets, so a scrape between a MULTI's parts cannot see count ≠ +Inf.
      count: running,
    });
  }
  return result;
}
