// The statuses belong to the API's contract; re-exported so the server's code keeps one import.

// Named apart from Prisma's generated BuildStatus enum, which core also exports.
export type { BuildStatus as BuildStatusName } from '@kiln/contract';
export { BUILD_STATUSES, FINAL_STATUSES } from '@kiln/contract';

import { BUILD_CACHE_ROOT } from './build-cache.js';

/** BullMQ queue of builds; a job's id is its build's id, so a build is queued at most once. */
export const QUEUE_BUILDS = 'kiln-builds';
/** Name of every job in the queue (BullMQ names jobs; the id is what identifies the build). */
export const BUILD_JOB_NAME = 'build';
export interface BuildJobData {
  buildId: string;
  /** W3C trace context of the request that queued the build, when tracing is on (tracing.ts). */
  traceparent?: string;
}
/** BullMQ's largest priority (lowest precedence). */
const MAX_PRIORITY = 2 ** 21;

/**
 * Job options shared by the API (enqueue) and the worker's reconciler (re-enqueue). `rank` is the
 * build's place among its project's queued builds (1 for the first): BullMQ runs lower priorities
 * first, so every project's first build goes before any project's second, and so on. One
 * project's long queue does not hold up another's build (see docs/architecture.md, fairness).
 */
export function buildJobOptions(buildId: string, attempts: number, rank = 1) {
  return {
    jobId: buildId,
    attempts,
    priority: Math.min(Math.max(1, rank), MAX_PRIORITY),
    backoff: { type: 'exponential', delay: 2000 },
    removeOnComplete: { age: 3600, count: 10_000 },
    removeOnFail: { age: 24 * 3600 },
  } as const;
}

/** Pub/sub channel carrying build ids to cancel; the worker running one aborts its solve. */
export const CHANNEL_CANCEL = 'kiln:cancel';

/**
 * A cancel asked of a running build, kept until the build is final: the message on
 * CHANNEL_CANCEL reaches only the workers listening then, and a build whose worker died is run
 * again by another, which checks this before its attempt starts.
 */
export const cancelRequestKey = (buildId: string) => `kiln:cancel-requested:${buildId}`;
/** Longer than a build stays queued or running in any sane deployment; deleted once it is final. */
export const CANCEL_REQUEST_TTL_SECONDS = 7 * 24 * 3600;

/**
 * Redis stream of a build's progress text, for live SSE: entries `{k: 'log', d: text}` while
 * it runs, then one `{k: 'end', d: status}`. Kept a day after the end; the stored log object
 * (logKey) is the permanent copy.
 */
export const logStreamKey = (buildId: string) => `kiln:logs:${buildId}`;
export const LOG_STREAM_TTL_SECONDS = 24 * 3600;
/**
 * `XADD ... MAXLEN ~` of the log stream: entries hold at most 64 KiB and the worker's byte
 * budget (KILN_MAX_LOG_BYTES) bounds the text, so this only stops a flood of tiny entries.
 */
export const LOG_STREAM_MAX_ENTRIES = 10_000;

/**
 * Redis ZSET of a project's live log streams (SSE) on every API replica: stream id → expiry
 * (Redis server time, ms), renewed by the API serving it (KILN_MAX_LOG_FOLLOWERS_PER_PROJECT).
 */
export const logFollowersKey = (projectId: string) => `kiln:log-followers:${projectId}`;

/** Every context object's key starts with this. */
export const CONTEXT_KEY_PREFIX = 'contexts/';
const ARTIFACT_KEY_PREFIX = 'artifacts/';
const LOG_KEY_PREFIX = 'logs/';
/** The key prefixes Kiln writes under: what its clean-up may touch in a bucket it may share with others. */
export const KILN_KEY_PREFIXES = [
  ARTIFACT_KEY_PREFIX,
  CONTEXT_KEY_PREFIX,
  LOG_KEY_PREFIX,
  BUILD_CACHE_ROOT,
] as const;
export const contextKey = (sha256: string) => `${CONTEXT_KEY_PREFIX}sha256/${sha256}.tar`;
/** Everything a build's attempts stored (their artifacts, their provenance) is below this. */
export const artifactPrefix = (buildId: string) => `${ARTIFACT_KEY_PREFIX}${buildId}/`;
/**
 * Each attempt stores under its own key: a worker cut off from Redis may still finish an attempt
 * that another worker has since started again, and neither may replace (or delete) the other's.
 */
export const artifactKey = (buildId: string, attempt: number, dest: string) =>
  `${artifactPrefix(buildId)}${attempt}/${dest}`;
export const logKey = (buildId: string) => `${LOG_KEY_PREFIX}${buildId}.log`;
/** The steps of a build's last solve as JSON (BuildSteps), beside its log: the build page's timeline. */
export const stepsKey = (buildId: string) => `${LOG_KEY_PREFIX}${buildId}.steps.json`;
/** One step of a solve as BuildKit's status stream ended it. */
export interface BuildStep {
  name: string;
  started: string | null;
  completed: string | null;
  cached: boolean;
  error: string | null;
}
/**
 * A solve's steps as stored: the first MAX_LISTED_STEPS it ended and how many more it had. The
 * graph is the tenant's (a Dockerfile of thousands of instructions), the worker's memory and the
 * object are not.
 */
export interface BuildSteps {
  steps: BuildStep[];
  omitted: number;
}
export const MAX_LISTED_STEPS = 1000;

/** Reads a stored steps object; objects written before `omitted` existed are a bare array. */
export function parseBuildSteps(json: string): BuildSteps {
  const parsed = JSON.parse(json) as BuildSteps | BuildStep[];
  return Array.isArray(parsed) ? { steps: parsed, omitted: 0 } : parsed;
}
/** Kiln's copy of an artifact's provenance sits beside it, so builds sharing the artifact share it too. */
export const provenanceKey = (artifactKey: string) => `${artifactKey}.provenance.json`;

/**
 * Redis hash: builder address → its default platform (`os/arch[/variant]`, the first platform
 * its ListWorkers reports). Workers write it on every health check; the API reads it to know
 * which platform a build without `platform` would be built for (result cache).
 */
export const builderPlatformsKey = (prefix = 'kiln') => `${prefix}:builder-platforms`;

/**
 * Redis hash: builder address → its capabilities (BuilderCapabilities as JSON: BuildKit version,
 * platforms, features). Workers write it on every successful health check and never expire it,
 * so the API knows what a builder that is down right now can do; it refuses at POST a spec no
 * builder can serve.
 */
export const builderCapabilitiesKey = (prefix = 'kiln') => `${prefix}:builder-capabilities`;

/**
 * Redis string (JSON array of `tcp://ip:port`, with a TTL of a few discovery rounds): the members
 * a `dns+tcp://` builder name resolved to when a worker last asked DNS. The API reads it (it
 * resolves nothing) to show, count and route on members; gone when no worker resolves the name.
 */
export const builderMembersKey = (service: string, prefix = 'kiln') => `${prefix}:builder-members:${service}`;

/**
 * Redis string with a TTL: the builder is draining (its pod is stopping), so the lease script gives
 * it no new build. Set, and kept while it drains, by POST /v1/builders/drain.
 */
export const builderDrainingKey = (address: string, prefix = 'kiln') =>
  `${prefix}:builder-draining:${address}`;

/**
 * Redis ZSET of a builder's leases: build id → expiry (Redis server time, ms). Workers add,
 * renew and remove them; the API counts the live ones to show a builder's load.
 */
export const builderLeaseKey = (address: string, prefix = 'kiln') => `${prefix}:leases:${address}`;

/**
 * Redis ZSET of a project's builds holding a builder slot: `buildId@builder` → lease expiry (its
 * running-builds quota; a build run again on another builder meanwhile holds two slots).
 */
export const projectLeaseKey = (projectId: string, prefix = 'kiln') =>
  `${prefix}:project-leases:${projectId}`;

/**
 * Redis string (JSON, with a TTL) holding a builder's last health check as a worker saw it:
 * `{healthy, lastError?, checkedAt, platform?}`. Gone when no worker has checked it lately.
 */
export const builderHealthKey = (address: string, prefix = 'kiln') => `${prefix}:builder-health:${address}`;

export interface PublishedBuilderHealth {
  healthy: boolean;
  lastError?: string;
  /** ISO time of the check. */
  checkedAt: string;
  platform?: string;
}
