/**
 * The only code that moves a build, or one of its attempts, between states (TRANSITIONS in
 * states.ts). Each transition is one function: the conditional row change, the attempt's end and
 * the completion events (the outbox) in one transaction; then, after the commit and idempotently,
 * the Redis side of a final state: the build's secrets deleted, the live log's end entry written,
 * the event deliveries enqueued.
 *
 * A transition whose row is not in one of its `from` statuses changes nothing and says so
 * (`applied: false`, with the status it found): callers decide whether that is news (a cancel won
 * the race) or nothing (a second reconciler got there first).
 */
import type { Redis } from 'ioredis';
import { deleteBuildSecrets } from '../build-secrets.js';
import {
  type BuildStatusName,
  cancelRequestKey,
  LOG_STREAM_MAX_ENTRIES,
  LOG_STREAM_TTL_SECONDS,
  logStreamKey,
} from '../builds.js';
import type { Build, BuildAttempt, Prisma } from '../db/generated/client.js';
import { recordBuildEvents } from '../events/outbox.js';
import type { Logger } from '../logger.js';
import { observeFinishedBuild } from '../metrics/build-metrics.js';
import { holdCacheSource } from './artifact-lock.js';
import { countBuildEvent } from './counters.js';
import type { AttemptGuard, BuildChange, BuildRepository, QueuedBuildInput } from './repository.js';
import { type AttemptOutcome, type BuildErrorCode, fromStatuses } from './states.js';

/** Enqueues the completion-event deliveries a committed transition inserted. Never throws. */
export interface EventEnqueuer {
  enqueue(deliveryIds: readonly string[]): Promise<void>;
}

export interface LifecycleDeps {
  repo: BuildRepository;
  /** Secrets and the live log stream. */
  redis: Redis;
  logger: Logger;
  /** Without it, deliveries wait for the worker's event sweep. */
  events?: EventEnqueuer;
  /** KILN_METRICS_MAX_PROJECTS: projects with a label of their own in the build histograms; default 0 (all `other`). */
  metricsMaxProjects?: number;
}

/** A final transition's result: the row as it ended, or the status that refused the change. */
export type FinalResult =
  | { applied: true; build: Build }
  | { applied: false; status: BuildStatusName | null };

/**
 * How the caller's attempt ended: the one named by `attemptId`, or, without it, every attempt
 * still open (callers that speak for them: the reconciler, BullMQ giving up on a job). `null`: the
 * caller ran no attempt. Attempts left open otherwise belong to a worker that vanished: `lost`.
 */
export interface AttemptEndInput {
  attemptId?: string | undefined;
  outcome: AttemptOutcome;
}

const VANISHED = {
  outcome: 'lost',
  errorCode: 'worker_lost',
  errorMessage: 'the worker running this attempt stopped',
} as const;

export interface FailureInput {
  code: BuildErrorCode;
  message: string;
  /** The attempt's outcome: `failed` (it ran and failed) unless its worker vanished (`lost`). */
  attempt: AttemptEndInput | null;
  /** Only from this attempt (see AttemptGuard). */
  guard?: AttemptGuard;
  /** Last words on the live log before its end entry, for callers with no log of their own. */
  logTail?: string;
}

export class BuildLifecycle {
  constructor(private readonly deps: LifecycleDeps) {}

  get repo(): BuildRepository {
    return this.deps.repo;
  }

  /**
   * queue: a new build row, `queued` (under the context lock when it reads a stored context);
   * with `maxQueued`, none (undefined) when the project already has that many (exact, see insertQueued).
   */
  queue(input: QueuedBuildInput): Promise<Build>;
  queue(input: QueuedBuildInput, maxQueued: number): Promise<Build | undefined>;
  async queue(input: QueuedBuildInput, maxQueued = 0): Promise<Build | undefined> {
    const build = await this.deps.repo.insertQueued(input, maxQueued);
    if (!build) return undefined;
    await countBuildEvent(this.deps.redis, { kind: 'queued', contextBytes: Number(build.contextSize ?? 0) });
    return build;
  }

  /**
   * answerFromCache: a new row, born `succeeded`, sharing `source`'s artifact object, with its
   * completion events; undefined when the source stopped being succeeded meanwhile
   * (artifact-lock.ts).
   */
  async answerFromCache(
    input: Prisma.BuildUncheckedCreateInput,
    source: Pick<
      Build,
      'id' | 'cachedFromId' | 'platform' | 'artifactKey' | 'artifactSize' | 'artifactDigest'
    >,
  ): Promise<Build | undefined> {
    const { repo } = this.deps;
    const now = new Date();
    const done = await repo.transaction(async (tx) => {
      if (!(await holdCacheSource(tx, source.id))) return undefined;
      const build = await repo.insertFinal(tx, {
        ...input,
        status: 'succeeded',
        // The build that ran, also when the match was itself a cached build.
        cachedFromId: source.cachedFromId ?? source.id,
        platform: source.platform,
        artifactKey: source.artifactKey,
        artifactSize: source.artifactSize,
        artifactDigest: source.artifactDigest,
        createdAt: now,
        startedAt: now,
        finishedAt: now,
      });
      return { build, deliveries: await recordBuildEvents(tx, build) };
    });
    if (!done) return undefined;
    await countBuildEvent(this.deps.redis, { kind: 'cached' });
    await this.deps.events?.enqueue(done.deliveries);
    return done.build;
  }

  /**
   * start: `queued` (or `running` whose worker vanished) → `running` on `builder`, opening a new
   * attempt; an attempt left open was run by a worker that died, so it ends `lost`. Only from the
   * status and attempt count the caller read: undefined when another worker moved the row since.
   */
  async start(
    build: Pick<Build, 'id' | 'status' | 'attempts'>,
    builder: string,
  ): Promise<BuildAttempt | undefined> {
    const { repo } = this.deps;
    if (!fromStatuses('start').includes(build.status)) return undefined;
    const now = new Date();
    const attempt = await repo.transaction(async (tx) => {
      const moved = await repo.moveStatus(
        tx,
        build.id,
        [build.status],
        'running',
        { startedAt: now, attempts: { increment: 1 }, builder, errorCode: null, errorMessage: null },
        { attempts: build.attempts },
      );
      if (!moved) return undefined;
      await repo.endOpenAttempts(tx, build.id, VANISHED, now);
      return repo.openAttempt(tx, build.id, builder, now);
    });
    if (attempt) await countBuildEvent(this.deps.redis, { kind: 'started' });
    return attempt;
  }

  /**
   * succeed: the artifact is stored; `change` names it (key, size, digest, platform, logKey).
   * `guard`: only while the row is still at this attempt, not one a worker that lost its lease
   * finishes after the build was started again.
   */
  succeed(
    id: string,
    change: BuildChange,
    attempt: AttemptEndInput | null,
    guard?: AttemptGuard,
  ): Promise<FinalResult> {
    return this.finish(
      id,
      fromStatuses('succeed'),
      'succeeded',
      { ...change, errorCode: null, errorMessage: null },
      { attempt, ...(guard ? { guard } : {}) },
    );
  }

  /** fail: final, with a typed code. */
  fail(id: string, failure: FailureInput, change: BuildChange = {}): Promise<FinalResult> {
    return this.finish(
      id,
      fromStatuses('fail'),
      'failed',
      { ...change, errorCode: failure.code, errorMessage: failure.message },
      {
        attempt: failure.attempt,
        attemptError: { code: failure.code, message: failure.message },
        ...(failure.guard ? { guard: failure.guard } : {}),
        ...(failure.logTail !== undefined ? { logTail: failure.logTail } : {}),
      },
    );
  }

  /**
   * cancel: a queued build by the API (`whileQueued`: a running one is left to its worker, which
   * cancels it once its solve stopped, so the row never says canceled while a builder still works).
   */
  cancel(
    id: string,
    message: string,
    options: { attempt?: AttemptEndInput | null; change?: BuildChange; whileQueued?: boolean } = {},
  ): Promise<FinalResult> {
    return this.finish(
      id,
      options.whileQueued ? ['queued'] : fromStatuses('cancel'),
      'canceled',
      { ...options.change, errorCode: 'canceled', errorMessage: message },
      {
        attempt: options.attempt ?? null,
        attemptError: { code: 'canceled', message },
      },
    );
  }

  /**
   * requeue: `running` → `queued` for another attempt: this one failed for infrastructure reasons
   * with attempts left (`failed`), or its worker is stopping (`lost`, worker_stopped). Only while
   * the row is still this attempt, so a newer attempt another worker started is never taken back.
   */
  async requeue(
    id: string,
    attempt: {
      attemptId: string;
      number: number;
      outcome: AttemptOutcome;
      code: BuildErrorCode;
      message: string;
    },
  ): Promise<boolean> {
    const { repo } = this.deps;
    return repo.transaction(async (tx) => {
      const moved = await repo.moveStatus(
        tx,
        id,
        fromStatuses('requeue'),
        'queued',
        {},
        { attempts: attempt.number },
      );
      // The attempt ended either way; only the row's move depends on it still being current.
      await repo.endAttempt(tx, attempt.attemptId, {
        outcome: attempt.outcome,
        errorCode: attempt.code,
        errorMessage: attempt.message,
      });
      return moved;
    });
  }

  /**
   * lose: the worker of a running build vanished (the reconciler saw its builder lease expire).
   * Its attempt ends `lost`; the build goes back to `queued`, or fails once `maxAttempts` are used
   * up, not counting attempts stopping workers handed back (a rolling deploy is no failure of the
   * build's, nor of BullMQ's count). Only the attempt judged lost (`guard`). Returns what
   * happened, or undefined when the row had moved on.
   */
  async lose(
    row: Pick<Build, 'id' | 'attempts' | 'builder'>,
    message: string,
    maxAttempts: number,
  ): Promise<'requeued' | 'failed' | undefined> {
    const guard = { attempts: row.attempts, builder: row.builder };
    const used = row.attempts - (await this.deps.repo.handedBack(row.id));
    if (used >= maxAttempts) {
      const result = await this.fail(row.id, {
        code: 'infrastructure',
        message: `${message}; gave up after ${used} attempts`,
        attempt: { outcome: 'lost' },
        guard,
        logTail: `\nERROR: ${message}; gave up after ${used} attempts\n`,
      });
      return result.applied ? 'failed' : undefined;
    }
    const { repo } = this.deps;
    const moved = await repo.transaction(async (tx) => {
      if (!(await repo.moveStatus(tx, row.id, fromStatuses('lose'), 'queued', {}, guard))) return false;
      await repo.endOpenAttempts(tx, row.id, {
        outcome: 'lost',
        errorCode: 'worker_lost',
        errorMessage: message,
      });
      return true;
    });
    if (!moved) return undefined;
    await this.appendLog(row.id, `\n#0 kiln: ${message}; the build will be retried\n`);
    return 'requeued';
  }

  /** expire: retention deletes a final build's objects; no event (not an outcome of the build). */
  expire(id: string): Promise<boolean> {
    const { repo } = this.deps;
    // The UPDATE waits for a result-cache insert holding this row FOR SHARE (artifact-lock.ts).
    return repo.transaction((tx) => repo.moveStatus(tx, id, fromStatuses('expire'), 'expired'));
  }

  /** The shared body of succeed, fail and cancel. */
  private async finish(
    id: string,
    from: readonly BuildStatusName[],
    to: BuildStatusName,
    change: BuildChange,
    o: {
      attempt: AttemptEndInput | null;
      attemptError?: { code: BuildErrorCode; message: string };
      guard?: AttemptGuard;
      logTail?: string;
    },
  ): Promise<FinalResult> {
    const { repo } = this.deps;
    const now = new Date();
    const result = await repo.transaction(async (tx) => {
      const moved = await repo.moveStatus(tx, id, from, to, { ...change, finishedAt: now }, o.guard);
      const build = await repo.byId(id, tx);
      if (build && !moved && (await this.ownSuccessCommitted(tx, build, to, o.attempt))) {
        // Its deliveries were recorded then; the worker's event sweep enqueues them.
        return { applied: true as const, build, deliveries: [] };
      }
      if (!moved || !build) return { applied: false as const, status: build?.status ?? null };
      const own = o.attempt && {
        outcome: o.attempt.outcome,
        errorCode: o.attempt.outcome === 'lost' ? VANISHED.errorCode : (o.attemptError?.code ?? null),
        errorMessage: o.attemptError?.message ?? null,
      };
      if (own && o.attempt?.attemptId) await repo.endAttempt(tx, o.attempt.attemptId, own, now);
      await repo.endOpenAttempts(tx, id, own && !o.attempt?.attemptId ? own : VANISHED, now);
      return { applied: true as const, build, deliveries: await recordBuildEvents(tx, build) };
    });
    if (!result.applied) return result;
    await this.afterFinal(result.build, result.deliveries, o.logTail);
    return { applied: true, build: result.build };
  }

  /**
   * Whether a succeed that found the row already final is the retry of this caller's own, whose
   * commit landed but whose reply was lost with the connection (the worker retries final writes
   * while PostgreSQL is away). Only that succeed ends the caller's attempt as `succeeded`; taken
   * for refused, the worker would delete the artifact the row names.
   */
  private async ownSuccessCommitted(
    tx: Prisma.TransactionClient,
    build: Build,
    to: BuildStatusName,
    attempt: AttemptEndInput | null,
  ): Promise<boolean> {
    if (to !== 'succeeded' || build.status !== 'succeeded' || !attempt?.attemptId) return false;
    return (await this.deps.repo.attemptOutcome(tx, attempt.attemptId)) === 'succeeded';
  }

  /** The Redis side of a final state; each step is idempotent and none may fail the transition. */
  private async afterFinal(build: Build, deliveries: readonly string[], logTail?: string): Promise<void> {
    const { redis, logger } = this.deps;
    const { id, status, startedAt, finishedAt } = build;
    await deleteBuildSecrets(redis, id).catch((err: unknown) => {
      logger.warn(
        { buildId: id, err: (err as Error).message },
        'could not delete the build secrets (they expire)',
      );
    });
    await redis.del(cancelRequestKey(id)).catch(() => undefined);
    await this.appendLog(id, logTail, status);
    await countBuildEvent(redis, {
      kind: 'finished',
      status,
      artifactBytes: status === 'succeeded' ? Number(build.artifactSize ?? 0) : 0,
      seconds: startedAt && finishedAt ? (finishedAt.getTime() - startedAt.getTime()) / 1000 : undefined,
    });
    await observeFinishedBuild(redis, build, this.deps.metricsMaxProjects ?? 0);
    await this.deps.events?.enqueue(deliveries);
  }

  /** Appends `text` to the live log stream and, with `end`, its end entry; renews its expiry. */
  private async appendLog(id: string, text: string | undefined, end?: BuildStatusName): Promise<void> {
    const key = logStreamKey(id);
    try {
      const multi = this.deps.redis.multi();
      const cap = ['MAXLEN', '~', LOG_STREAM_MAX_ENTRIES] as const;
      if (text) multi.xadd(key, ...cap, '*', 'k', 'log', 'd', text);
      if (end) multi.xadd(key, ...cap, '*', 'k', 'end', 'd', end);
      await multi.expire(key, LOG_STREAM_TTL_SECONDS).exec();
    } catch (err) {
      this.deps.logger.warn({ buildId: id, err: (err as Error).message }, 'log stream write failed');
    }
  }
}
