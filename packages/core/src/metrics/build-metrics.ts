/**
 * What the worker and the lifecycle observe about finished builds, as Redis histograms
 * (histograms.ts), labelled by outcome and by project for the first `maxProjects` projects seen
 * (KILN_METRICS_MAX_PROJECTS); the rest share `other`, so a thousand projects cannot blow up
 * Prometheus' series.
 */
import type { Redis } from 'ioredis';
import { BUILD_DURATION_BUCKETS } from './buckets.js';
import { type HistogramSpec, observeHistograms } from './histograms.js';
import { countMinute } from './minute-stats.js';

const LABELS = ['outcome', 'project'] as const;

export const BUILD_HISTOGRAMS = {
  queueWait: {
    name: 'kiln_build_queue_wait_seconds',
    help: 'From accepting a build to the start of its last attempt (or to its end, if it never started), by outcome and project',
    labelNames: LABELS,
    buckets: [0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600],
  },
  duration: {
    name: 'kiln_build_duration_seconds',
    help: 'From the start of its last attempt to the end of a build, by outcome and project',
    labelNames: LABELS,
    buckets: BUILD_DURATION_BUCKETS,
  },
  exportRate: {
    name: 'kiln_export_bytes_per_second',
    help: 'Artifact bytes stored per second of export (first byte to stored), by outcome and project',
    labelNames: LABELS,
    buckets: [1e5, 1e6, 5e6, 1e7, 2.5e7, 5e7, 1e8, 2.5e8, 5e8, 1e9, 2.5e9],
  },
} as const satisfies Record<string, HistogramSpec>;

export const metricProjectsKey = (prefix = 'kiln') => `${prefix}:metric-projects`;

/** The project's own label while fewer than `max` projects have one, else `other`; atomic across processes. */
const ADMIT = `
if redis.call('SISMEMBER', KEYS[1], ARGV[1]) == 1 then return 1 end
if redis.call('SCARD', KEYS[1]) < tonumber(ARGV[2]) then redis.call('SADD', KEYS[1], ARGV[1]) return 1 end
return 0`;

export const OTHER_PROJECTS = 'other';

export async function projectLabel(
  redis: Redis,
  projectId: string,
  max: number,
  prefix?: string,
): Promise<string> {
  if (max <= 0) return OTHER_PROJECTS;
  const admitted = await redis.eval(ADMIT, 1, metricProjectsKey(prefix), projectId, String(max));
  return admitted === 1 ? projectId : OTHER_PROJECTS;
}

export interface FinishedBuildTimes {
  projectId: string;
  status: string;
  createdAt: Date;
  startedAt: Date | null;
  finishedAt: Date | null;
}

/** Queue wait and duration of a build that reached a final state (histograms and the minute counters); never throws. */
export async function observeFinishedBuild(
  redis: Redis,
  build: FinishedBuildTimes,
  maxProjects: number,
): Promise<void> {
  const { createdAt, startedAt, finishedAt } = build;
  if (!finishedAt) return;
  try {
    const labels = {
      outcome: build.status,
      project: await projectLabel(redis, build.projectId, maxProjects),
    };
    const waitEnd = startedAt ?? finishedAt;
    const seconds = startedAt ? (finishedAt.getTime() - startedAt.getTime()) / 1000 : undefined;
    await countMinute(redis, { kind: 'finished', projectId: build.projectId, status: build.status, seconds });
    await observeHistograms(redis, [
      { spec: BUILD_HISTOGRAMS.queueWait, labels, value: (waitEnd.getTime() - createdAt.getTime()) / 1000 },
      ...(seconds !== undefined ? [{ spec: BUILD_HISTOGRAMS.duration, labels, value: seconds }] : []),
    ]);
  } catch {
    // A lost sample must not fail a transition.
  }
}

/** One export's throughput; never throws. Exports shorter than a millisecond are not a rate. */
export async function observeExport(
  redis: Redis,
  sample: { projectId: string; outcome: string; bytes: number; seconds: number },
  maxProjects: number,
): Promise<void> {
  if (sample.seconds < 0.001 || sample.bytes <= 0) return;
  try {
    const labels = {
      outcome: sample.outcome,
      project: await projectLabel(redis, sample.projectId, maxProjects),
    };
    await observeHistograms(redis, [
      { spec: BUILD_HISTOGRAMS.exportRate, labels, value: sample.bytes / sample.seconds },
    ]);
  } catch {
    // As above.
  }
}
