/**
 * Counters of what builds did, kept in one Redis hash as transitions happen (BuildLifecycle, after
 * each commit), so /metrics reads one hash instead of aggregating the Build table on every scrape.
 * They only grow (Prometheus counters: a Redis that lost them reads as a reset).
 */
import type { Redis } from 'ioredis';
import type { BuildStatusName } from '../builds.js';

export const buildCountersKey = (prefix = 'kiln') => `${prefix}:build-counters`;

/** What one transition adds. */
export type CounterEvent =
  | { kind: 'queued'; contextBytes: number }
  | { kind: 'cached' }
  | { kind: 'started' }
  | { kind: 'finished'; status: BuildStatusName; artifactBytes: number; seconds: number | undefined }
  /** The steps of one solve as its status stream ended them: `cached` of `vertices` came from BuildKit's cache. */
  | { kind: 'solved'; vertices: number; cached: number }
  /** A result-cache lookup (a build the cache could answer): answered or not. */
  | { kind: 'result-cache'; hit: boolean }
  /** One attempt to deliver a completion event, by what became of the delivery. */
  | { kind: 'delivery'; status: 'delivered' | 'retrying' | 'failed' };

export interface BuildCounterValues {
  queued: number;
  cached: number;
  started: number;
  finished: Partial<Record<BuildStatusName, number>>;
  contextBytes: number;
  artifactBytes: number;
  /** Seconds the last finished build ran (started to finished); undefined before any. */
  lastSeconds: number | undefined;
  vertices: { all: number; cached: number };
  resultCache: { hit: number; miss: number };
  deliveries: Record<string, number>;
}

/** Adds one event; never throws (a lost increment must not fail a transition). */
export async function countBuildEvent(redis: Redis, event: CounterEvent, prefix?: string): Promise<void> {
  const key = buildCountersKey(prefix);
  const multi = redis.multi();
  switch (event.kind) {
    case 'queued':
      multi.hincrby(key, 'queued', 1).hincrby(key, 'context_bytes', event.contextBytes);
      break;
    case 'cached':
      multi.hincrby(key, 'cached', 1);
      break;
    case 'started':
      multi.hincrby(key, 'started', 1);
      break;
    case 'finished':
      multi.hincrby(key, `finished:${event.status}`, 1).hincrby(key, 'artifact_bytes', event.artifactBytes);
      if (event.seconds !== undefined) multi.hset(key, 'last_seconds', event.seconds.toFixed(3));
      break;
    case 'solved':
      multi.hincrby(key, 'vertices', event.vertices).hincrby(key, 'vertices_cached', event.cached);
      break;
    case 'result-cache':
      multi.hincrby(key, event.hit ? 'result_cache:hit' : 'result_cache:miss', 1);
      break;
    case 'delivery':
      multi.hincrby(key, `delivery:${event.status}`, 1);
      break;
  }
  await multi.exec().catch(() => undefined);
}

export async function readBuildCounters(redis: Redis, prefix?: string): Promise<BuildCounterValues> {
  const h = await redis.hgetall(buildCountersKey(prefix));
  const n = (field: string) => Number(h[field] ?? 0);
  const finished: Partial<Record<BuildStatusName, number>> = {};
  const deliveries: Record<string, number> = {};
  for (const [field, value] of Object.entries(h)) {
    if (field.startsWith('finished:')) finished[field.slice(9) as BuildStatusName] = Number(value);
    if (field.startsWith('delivery:')) deliveries[field.slice(9)] = Number(value);
  }
  return {
    queued: n('queued'),
    cached: n('cached'),
    started: n('started'),
    finished,
    contextBytes: n('context_bytes'),
    artifactBytes: n('artifact_bytes'),
    lastSeconds: h.last_seconds === undefined ? undefined : Number(h.last_seconds),
    vertices: { all: n('vertices'), cached: n('vertices_cached') },
    resultCache: { hit: n('result_cache:hit'), miss: n('result_cache:miss') },
    deliveries,
  };
}
