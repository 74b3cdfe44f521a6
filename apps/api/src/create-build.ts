import { createHash } from 'node:crypto';
import {
  AppError,
  type Build,
  type BuildSecrets,
  type BuildSpec,
  buildJobOptions,
  buildSecretsTtlSeconds,
  checkRegistryHost,
  deleteBuildSecrets,
  effectiveQuotas,
  type GitContext,
  gitRefColumn,
  imageRegistryHosts,
  isCommitId,
  isUniqueViolation,
  type Prisma,
  QUEUE_BUILDS,
  requireSecretsKey,
  resultCacheKey,
  storeBuildSecrets,
  storedBytesLeft,
} from '@kiln/core';
import { checkSomeBuilderCanServe } from './builder-capabilities.js';
import type { ApiDeps } from './deps.js';
import { type NewBuildData, reuseResult } from './result-cache.js';
import type { ReceivedContext } from './upload.js';

const MAX_IDEMPOTENCY_KEY = 255;

export function checkIdempotencyKey(key: string | undefined): string | undefined {
  if (key === undefined || key === '') return undefined;
  if (key.length > MAX_IDEMPOTENCY_KEY || !/^[\x21-\x7e]+$/.test(key)) {
    throw new AppError(
      'invalid_request',
      `Idempotency-Key must be 1-${MAX_IDEMPOTENCY_KEY} printable ASCII characters`,
    );
  }
  return key;
}

/** `queued`: a new build to run; `cached`: a new build answered from the result cache; `existing`: an idempotent retry. */
export type CreateOutcome = 'queued' | 'cached' | 'existing';

/**
 * What a build is made from: an uploaded context, or a git repository BuildKit fetches (from
 * POST /v1/builds with {git}, or a webhook push, which pins the pushed commit).
 */
export type BuildSource =
  | { kind: 'upload'; context: ReceivedContext }
  | {
      kind: 'git';
      git: GitContext;
      /** The pushed commit (webhooks); a ref that is a full commit id counts as one too. */
      commit?: string;
      origin: 'api' | 'github' | 'gitlab';
      triggerId?: string;
    };

/**
 * Records the build and, unless the result cache answers it (result-cache.ts; not with
 * `noCache`), enqueues its job. With an Idempotency-Key, a retried request gets the build the
 * first one made (cached or not); the same key with another body is a conflict. If Redis is
 * down the row stays queued and the worker's reconciler enqueues it later: an accepted build is
 * never lost.
 */
export async function createBuild(
  deps: ApiDeps,
  projectId: string,
  spec: BuildSpec,
  source: BuildSource,
  idempotencyKey: string | undefined,
  secrets: BuildSecrets = {},
  /** The request's trace, continued by the worker (core's tracing.ts). */
  traceparent?: string,
): Promise<{ build: Build; outcome: CreateOutcome }> {
  const unset = spec.secrets?.find((id) => !Object.hasOwn(secrets, id));
  if (unset !== undefined) throw new AppError('invalid_spec', `secret ${unset} has no value`);
  if (spec.secrets) requireSecretsKey(deps.config.credentialsKeys);
  for (const host of imageRegistryHosts(spec)) checkRegistryHost(host, deps.config.registries);
  const fields = sourceFields(source);
  const requestHash = createHash('sha256')
    .update(JSON.stringify({ spec, context: fields.identity }))
    .digest('hex');
  if (idempotencyKey) {
    const existing = await deps.builds.byIdempotencyKey(projectId, idempotencyKey);
    if (existing) return { build: sameRequest(existing, requestHash), outcome: 'existing' };
  }
  // Uploads were checked before their body was read (build-request.ts); this covers every source.
  await checkSomeBuilderCanServe(deps, spec, {
    gitSubdir: source.kind === 'git' && Boolean(source.git.subdir),
  });
  const data: NewBuildData = {
    projectId,
    spec: spec as unknown as Prisma.InputJsonValue,
    ...fields.columns,
    // With secrets the output may depend on values no key may hold: such builds neither reuse nor
    // serve. An image output's point is the push, which a cached answer would skip.
    cacheKey:
      fields.cacheable && !spec.secrets && spec.output.type !== 'image'
        ? resultCacheKey(fields.identity, spec)
        : null,
    idempotencyKey: idempotencyKey ?? null,
    requestHash,
  };
  let build: Build;
  let rank: number;
  try {
    const cached = spec.noCache ? undefined : await reuseResult(deps, data, spec.platform);
    if (cached) return { build: cached, outcome: 'cached' };
    const admitted = await admit(deps, projectId, source.kind === 'upload' ? source.context : null);
    rank = admitted.rank;
    build = await insertQueued(
      deps,
      data,
      // A git build stores no context: BuildKit fetches the repository when the build runs.
      source.kind === 'upload' ? source.context : undefined,
      admitted,
      spec.secrets ? secrets : undefined,
    );
  } catch (err) {
    // Two concurrent requests with one key: the loser answers with the winner's build.
    if (idempotencyKey && isUniqueViolation(err)) {
      const winner = await deps.builds.byIdempotencyKey(projectId, idempotencyKey);
      if (winner) return { build: sameRequest(winner, requestHash), outcome: 'existing' };
    }
    throw err;
  }
  try {
    await deps.queue.add(
      QUEUE_BUILDS,
      { buildId: build.id, ...(traceparent ? { traceparent } : {}) },
      buildJobOptions(build.id, deps.config.buildAttempts, rank),
    );
  } catch (err) {
    deps.logger.warn({ err, buildId: build.id }, 'enqueue failed; the reconciler will enqueue the build');
  }
  return { build, outcome: 'queued' };
}

/**
 * Ranks past this are all the same to fair scheduling (a project with so many builds waiting goes
 * after every project with fewer), so admission need not count further.
 */
const RANKS_COUNTED = 100;

/**
 * Admission of one more queued build: the project must be enabled, under its queued-builds quota,
 * and, with an uploaded context it is not charged for yet, keep its stored bytes within its quota
 * once that context counts. Returns the build's rank among its project's queued builds, its job's
 * priority (fair scheduling, see buildJobOptions), and the queued-builds quota, which the insert
 * enforces exactly (concurrent POSTs can each pass this check for the last place). The stored-bytes
 * check is not exact in the same way: concurrent POSTs of new contexts may each fit alone.
 */
async function admit(
  deps: ApiDeps,
  projectId: string,
  context: ReceivedContext | null,
): Promise<{ rank: number; maxQueued: number; holdsContext: boolean }> {
  const admission = await deps.builds.projectAdmission(
    projectId,
    deps.config.quotas.queuedBuilds,
    RANKS_COUNTED,
    context?.key ?? null,
  );
  if (!admission) throw new AppError('not_found', `no project ${projectId}`);
  if (admission.disabledAt) throw new AppError('forbidden', 'the project is disabled');
  const quotas = effectiveQuotas(deps.config.quotas, admission);
  const { queuedBuilds } = quotas;
  if (queuedBuilds > 0 && admission.queued >= queuedBuilds)
    throw queuedQuotaExceeded(admission.queued, queuedBuilds);
  const stored = Number(admission.storedBytes);
  const left = storedBytesLeft(quotas, stored);
  const adds = context && !admission.holdsContext ? context.size : 0;
  if (left !== null && (left <= 0 || adds > left)) {
    throw new AppError(
      'quota_exceeded',
      `the project keeps ${stored} bytes stored${adds > 0 ? ` and this context adds ${adds}` : ''}, over its limit (stored bytes: ${quotas.storedBytes}); builds past retention free theirs`,
    );
  }
  return { rank: admission.queued + 1, maxQueued: queuedBuilds, holdsContext: admission.holdsContext };
}

function queuedQuotaExceeded(queued: number, limit: number): AppError {
  return new AppError(
    'quota_exceeded',
    `the project has ${queued} queued builds, its limit (queued builds: ${limit}); wait for some to start or cancel some`,
  );
}

/**
 * The row's source columns, and what identifies the build's input for idempotency and the result
 * cache: the upload's digest, or repository + commit + subdirectory. A git build whose commit is
 * not known yet (a branch or tag) is never answered from the cache: the ref may have moved.
 */
function sourceFields(source: BuildSource): {
  columns: Omit<NewBuildData, 'projectId' | 'spec' | 'cacheKey' | 'idempotencyKey' | 'requestHash'>;
  identity: string;
  cacheable: boolean;
} {
  if (source.kind === 'upload') {
    const { context } = source;
    return {
      columns: { contextDigest: context.digest, contextSize: BigInt(context.size), contextKey: context.key },
      identity: context.digest,
      cacheable: true,
    };
  }
  const { git } = source;
  const commit = source.commit ?? (isCommitId(git.ref) ? git.ref : undefined);
  const gitRef = gitRefColumn(git);
  return {
    columns: {
      source: source.origin,
      gitUrl: git.url,
      gitRef,
      gitCommit: commit ?? null,
      triggerId: source.triggerId ?? null,
    },
    identity: `git:${git.url}#${commit ?? gitRef ?? ''}${commit && git.subdir ? `:${git.subdir}` : ''}`,
    cacheable: commit !== undefined,
  };
}

/**
 * Inserts the queued build, within the project's queued-builds quota exactly (the insert counts
 * under a per-project lock, so concurrent POSTs cannot all take the last place), under the
 * context's shared advisory lock (retention deletes contexts
 * under the exclusive one; see context-lock.ts in @kiln/core), then stores the context object
 * unless it is there already and this project stored it before (content-addressed: an earlier
 * build sent the same bytes). Once the
 * row is committed, retention sees a recent build using the context and keeps it; a retention
 * pass that held the lock first may have deleted it, and then it is stored again, before the job
 * exists. The secrets go first: the reconciler enqueues a fresh upload's row only once its
 * context is stored, and its worker must find them then.
 */
async function insertQueued(
  deps: ApiDeps,
  data: NewBuildData,
  context: ReceivedContext | undefined,
  admitted: { maxQueued: number; holdsContext: boolean },
  secrets: BuildSecrets | undefined,
): Promise<Build> {
  const { maxQueued } = admitted;
  // The insert took the context's lock: retention no longer deletes the object from here on.
  const build = await deps.lifecycle.queue(data, maxQueued);
  if (!build) throw queuedQuotaExceeded(maxQueued, maxQueued);
  if (secrets) await handOverSecrets(deps, build, secrets);
  // An upload this project never stored is stored even when another project's identical one is
  // there: skipping the put would answer measurably sooner (seconds for a large context), telling
  // the caller that someone else holds these bytes.
  const mustStore = context?.uploaded === true && !admitted.holdsContext;
  if (context && (mustStore || !(await deps.storage.head(context.key)))) {
    await context.restore().catch(async (err: unknown) => {
      // No object, no build (a stored context retention deleted before the insert).
      await deps.builds.deleteQueued(build.id, contextCutoff(deps)).catch(() => undefined);
      if (secrets) await deleteBuildSecrets(deps.redis, build.id).catch(() => undefined);
      throw err;
    });
  }
  return build;
}

/**
 * Hands the secret values to the build's worker through Redis (never PostgreSQL): after the insert,
 * whose id names the key, and before the context is stored and the job added; the reconciler leaves
 * a fresh queued row alone for a few seconds. If Redis refuses them the row goes again, so the
 * caller can simply retry.
 */
async function handOverSecrets(deps: ApiDeps, build: Build, secrets: BuildSecrets): Promise<void> {
  const { buildTimeoutSeconds, buildAttempts } = deps.config;
  try {
    await storeBuildSecrets(
      deps.redis,
      build.id,
      secrets,
      buildSecretsTtlSeconds(buildTimeoutSeconds, buildAttempts),
      requireSecretsKey(deps.config.credentialsKeys),
    );
  } catch (err) {
    deps.logger.warn({ buildId: build.id, err: (err as Error).message }, 'storing the build secrets failed');
    // Left queued (PostgreSQL down too), the worker fails it with secrets_unavailable.
    await deps.builds.deleteQueued(build.id, contextCutoff(deps)).catch(() => undefined);
    throw new AppError('unavailable', 'the build secrets could not be stored: try again');
  }
}

function sameRequest(build: Build, requestHash: string): Build {
  if (build.requestHash !== requestHash) {
    throw new AppError('conflict', 'this Idempotency-Key was already used with a different request');
  }
  return build;
}

/** Before this, a build's context is kept (and charged) only while an unfinished build uses it. */
export function contextCutoff(deps: ApiDeps): Date {
  return new Date(Date.now() - deps.config.retention.contextDays * 24 * 3600 * 1000);
}
