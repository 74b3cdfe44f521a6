/**
 * The worker process's entry class: a BullMQ Worker on QUEUE_BUILDS running `runBuild` for each
 * job, plus the builder pool, the cancel listener, the reconciler, the retention schedule and the
 * completion-event dispatcher.
 * `start()` / `stop()`.
 */
import {
  type BuildJobData,
  BuildLifecycle,
  BuildRepository,
  contextLimitsOf,
  createLogger,
  createPrismaClient,
  createStorage,
  isDatabaseUnavailable,
  KILN_KEY_PREFIXES,
  type KilnConfig,
  type Logger,
  NO_TRACING,
  type ObjectStorage,
  type PrismaClient,
  QUEUE_BUILDS,
  RegistryCredentialStore,
  startTracing,
  type Tracing,
} from '@kiln/core';
import { DelayedError, type Job, Queue, UnrecoverableError, Worker } from 'bullmq';
import type { Redis } from 'ioredis';
import { ActiveBuilds } from './active-builds.js';
import type { DialBuilder } from './builders/clients.js';
import { BuilderPool, NoBuilderAvailableError } from './builders/pool.js';
import { CancelListener } from './cancel.js';
import { EventDispatcher } from './events/dispatcher.js';
import { Reconciler } from './reconciler.js';
import { bullConnection, commandConnection } from './redis-connections.js';
import { type RetentionReport, runRetentionOnce } from './retention.js';
import { RetentionSchedule } from './retention-schedule.js';
import {
  AttemptFailedError,
  HandBackError,
  type RunBuildResult,
  runBuild,
  runsWithLiveLease,
} from './run-build.js';

export interface WorkerDeps {
  logger?: Logger;
  /** Shared client; when given, stop() leaves it open. */
  prisma?: PrismaClient;
  storage?: ObjectStorage;
  /** Dials a builder (tests); default @kiln/buildkit-client's connect(). */
  connectBuilder?: DialBuilder;
  /** BullMQ key prefix; default BullMQ's (`bull`), which the API uses too. */
  queuePrefix?: string;
  /** Namespace of the builder lease and affinity keys; default `kiln`. */
  keyPrefix?: string;
  /** Builder lease TTL; default 30 s. */
  leaseTtlMs?: number;
  /** Builder health check period; default 5 s; 0 = no periodic checks. */
  healthIntervalMs?: number;
  /** Check every builder before taking jobs; default true. */
  initialHealthCheck?: boolean;
  /** Reconciler period; default 15 s; 0 = no reconciler timer. */
  reconcileIntervalMs?: number;
  /** Queued rows younger than this are left to the API; default 5 s. */
  queuedGraceMs?: number;
  /** Retention period (one worker of all runs each round); default KILN_RETENTION_INTERVAL_SECONDS; 0 = no timer. */
  retentionIntervalMs?: number;
  /** stop(): how long running builds may finish before they are handed back; default 30 s. */
  shutdownGraceMs?: number;
  /** Delay before a handed-back job runs again; default 1 s. */
  handBackDelayMs?: number;
  /** BullMQ lock duration of a job; default BullMQ's (30 s). */
  lockDurationMs?: number;
  tmpDir?: string;
  /** Steps a build's timeline lists; default MAX_LISTED_STEPS (tests lower it to see the cap). */
  maxListedSteps?: number;
}

/** Delay before a job that failed because PostgreSQL was away runs again. */
const DB_DOWN_DELAY_MS = 3000;
/** The least idle time after which a put's leftovers count as abandoned (see start). */
const ABANDONED_PUT_MIN_MS = 3600_000;

export class KilnWorker {
  readonly logger: Logger;
  readonly active = new ActiveBuilds();
  private redis: Redis | undefined;
  private bullConnection: Redis | undefined;
  private prisma: PrismaClient | undefined;
  private lifecycle: BuildLifecycle | undefined;
  private storage: ObjectStorage | undefined;
  private tracing: Tracing = NO_TRACING;
  private worker: Worker<BuildJobData, RunBuildResult> | undefined;
  private queue: Queue<BuildJobData> | undefined;
  private poolInstance: BuilderPool | undefined;
  private cancel: CancelListener | undefined;
  private reconcilerInstance: Reconciler | undefined;
  private retention: RetentionSchedule | undefined;
  /** The logins pass of start(), waited for before the database connection closes. */
  private startupReseal: Promise<void> | undefined;
  private eventsInstance: EventDispatcher | undefined;
  private stopping: Promise<void> | undefined;

  constructor(
    readonly config: KilnConfig,
    private readonly deps: WorkerDeps = {},
  ) {
    this.logger = deps.logger ?? createLogger('kiln-worker', config.logLevel, config.logFormat);
  }

  get pool(): BuilderPool {
    if (!this.poolInstance) throw new Error('the worker is not started');
    return this.poolInstance;
  }

  get reconciler(): Reconciler {
    if (!this.reconcilerInstance) throw new Error('the worker is not started');
    return this.reconcilerInstance;
  }

  get events(): EventDispatcher {
    if (!this.eventsInstance) throw new Error('the worker is not started');
    return this.eventsInstance;
  }

  async start(): Promise<void> {
    if (this.worker) return;
    const { config, deps, logger } = this;
    this.bullConnection = bullConnection(config.redisUrl);
    this.redis = commandConnection(config.redisUrl);
    for (const conn of [this.bullConnection, this.redis]) {
      conn.on('error', (err) => logger.warn({ err: err.message }, 'redis connection error'));
    }
    this.prisma = deps.prisma ?? createPrismaClient(config.databaseUrl);
    this.storage = deps.storage ?? (await createStorage(config.storage));
    this.tracing = await startTracing(config.otlpTracesUrl, 'kiln-worker');
    // In the background, since it walks the whole store; again at each retention pass, as
    // processes die between restarts too.
    void this.removeAbandonedPuts();
    this.poolInstance = new BuilderPool({
      builders: config.builders,
      dnsServers: config.builderDiscovery.dnsServers,
      discoveryIntervalMs: config.builderDiscovery.intervalSeconds * 1000,
      keepaliveSeconds: config.builderKeepaliveSeconds,
      isolation: config.builderIsolation,
      redis: this.redis,
      logger,
      ...(deps.keyPrefix !== undefined ? { keyPrefix: deps.keyPrefix } : {}),
      ...(deps.leaseTtlMs !== undefined ? { leaseTtlMs: deps.leaseTtlMs } : {}),
      ...(deps.healthIntervalMs !== undefined ? { healthIntervalMs: deps.healthIntervalMs } : {}),
      ...(deps.connectBuilder ? { connectBuilder: deps.connectBuilder } : {}),
      // The job id is the build id; a job not delayed (running, gone) is left alone.
      wakeWaiter: async (buildId) => {
        const job = await this.queue?.getJob(buildId);
        if (job && (await job.isDelayed())) await job.promote();
      },
    });
    await this.poolInstance.start({ initialCheck: deps.initialHealthCheck ?? true });

    this.cancel = new CancelListener(config.redisUrl, this.active, logger);
    await this.cancel.start();

    const prefix = deps.queuePrefix !== undefined ? { prefix: deps.queuePrefix } : {};
    this.queue = new Queue<BuildJobData>(QUEUE_BUILDS, { connection: this.bullConnection, ...prefix });
    this.queue.on('error', (err) => logger.warn({ err: err.message }, 'queue error'));

    this.eventsInstance = new EventDispatcher({
      prisma: this.prisma,
      connection: this.bullConnection,
      counters: this.redis,
      logger,
      attempts: config.events.attempts,
      backoffMs: config.events.backoffMs,
      timeoutMs: config.events.timeoutSeconds * 1000,
      allowedNetworks: config.events.allowedNetworks,
      ...prefix,
      ...(deps.reconcileIntervalMs !== undefined ? { sweepIntervalMs: deps.reconcileIntervalMs } : {}),
      ...(deps.queuedGraceMs !== undefined ? { sweepGraceMs: deps.queuedGraceMs } : {}),
    });
    await this.eventsInstance.start();

    this.lifecycle = new BuildLifecycle({
      repo: new BuildRepository(this.prisma),
      redis: this.redis,
      logger,
      events: this.eventsInstance,
      metricsMaxProjects: config.metricsMaxProjects,
    });
    const registryCredentials = new RegistryCredentialStore(this.prisma, config.credentialsKeys);
    const runDeps = {
      metricsMaxProjects: config.metricsMaxProjects,
      tracing: this.tracing,
      lifecycle: this.lifecycle,
      storage: this.storage,
      redis: this.redis,
      pool: this.poolInstance,
      active: this.active,
      logger,
      buildTimeoutSeconds: config.buildTimeoutSeconds,
      quotas: config.quotas,
      contextLimits: contextLimitsOf(config.limits),
      allowedFrontends: config.allowedFrontends,
      registryCredentials,
      ...(config.buildCache ? { buildCache: config.buildCache } : {}),
      ...(config.credentialsKeys ? { credentialsKeys: config.credentialsKeys } : {}),
      ...(deps.tmpDir !== undefined ? { tmpDir: deps.tmpDir } : {}),
      ...(deps.maxListedSteps !== undefined ? { maxListedSteps: deps.maxListedSteps } : {}),
      ...(deps.handBackDelayMs !== undefined ? { handBackDelayMs: deps.handBackDelayMs } : {}),
    };
    this.worker = new Worker<BuildJobData, RunBuildResult>(
      QUEUE_BUILDS,
      async (job, token) => {
        const buildId = job.data?.buildId ?? job.id;
        if (!buildId) throw new Error('job without a build id');
        try {
          return await runBuild(runDeps, buildId, {
            ...(job.opts.priority ? { rank: job.opts.priority } : {}),
            attemptsMade: job.attemptsMade,
            attempts: job.opts.attempts ?? 1,
            ...(job.data?.traceparent ? { traceparent: job.data.traceparent } : {}),
          });
        } catch (err) {
          // Back to the queue without using up an attempt: this worker stops or every builder is
          // full, or PostgreSQL is away (a build that cannot even be read must not fail for good).
          // An attempt runBuild ended itself (final, or failed and requeued) is BullMQ's to count,
          // whatever its message says.
          const delayMs =
            err instanceof HandBackError
              ? err.delayMs
              : !(err instanceof UnrecoverableError || err instanceof AttemptFailedError) &&
                  isDatabaseUnavailable(err)
                ? DB_DOWN_DELAY_MS
                : undefined;
          if (delayMs !== undefined && token) {
            if (!(err instanceof HandBackError)) {
              logger.warn({ buildId, err: (err as Error).message }, 'database unavailable: job handed back');
            }
            await job.moveToDelayed(Date.now() + delayMs, token);
            throw new DelayedError((err as Error).message);
          }
          throw err;
        }
      },
      {
        connection: this.bullConnection,
        concurrency: config.workerConcurrency,
        ...(deps.lockDurationMs !== undefined ? { lockDuration: deps.lockDurationMs } : {}),
        ...prefix,
      },
    );
    this.worker.on('error', (err) => logger.warn({ err: err.message }, 'worker error'));
    this.worker.on('failed', (job, err) => {
      if (job) void this.onFailed(job, err);
    });
    await this.worker.waitUntilReady();
    this.startupReseal = this.resealLogins(registryCredentials);

    this.reconcilerInstance = new Reconciler({
      lifecycle: this.lifecycle,
      queue: this.queue,
      pool: this.poolInstance,
      logger,
      attempts: config.buildAttempts,
      storage: this.storage,
      ...(deps.reconcileIntervalMs !== undefined ? { intervalMs: deps.reconcileIntervalMs } : {}),
      ...(deps.queuedGraceMs !== undefined ? { queuedGraceMs: deps.queuedGraceMs } : {}),
    });
    this.reconcilerInstance.start();

    this.retention = new RetentionSchedule({
      redis: this.redis,
      logger,
      intervalMs: deps.retentionIntervalMs ?? config.retention.intervalSeconds * 1000,
      // The round ends when all have: rounds never overlap in a process.
      run: async () => {
        const [retention] = await Promise.allSettled([
          this.runRetentionOnce(),
          this.removeAbandonedPuts(),
          this.resealLogins(registryCredentials),
        ]);
        if (retention.status === 'rejected') throw retention.reason;
        return retention.value;
      },
      ...(deps.keyPrefix !== undefined ? { keyPrefix: deps.keyPrefix } : {}),
    });
    this.retention.start();
    logger.info(
      {
        builders: config.builders.map((b) => `${b.address}=${b.concurrency}`),
        concurrency: config.workerConcurrency,
      },
      'worker started',
    );
  }

  /**
   * Removes what killed processes left mid-put (temp files, open multipart uploads): idle past a
   * build's time, and an hour at least, since a slow client's context upload on S3 may write no
   * part for minutes. Never rejects.
   */
  private async removeAbandonedPuts(): Promise<void> {
    if (!this.storage) return;
    const idleMs = Math.max(this.config.buildTimeoutSeconds * 1000, ABANDONED_PUT_MIN_MS);
    try {
      const left = await this.storage.removeAbandonedPuts(KILN_KEY_PREFIXES, idleMs);
      if (left.length > 0) this.logger.warn({ puts: left.length }, 'removed what abandoned puts left');
    } catch (err) {
      this.logger.warn({ err: (err as Error).message }, 'removing abandoned puts failed');
    }
  }

  /**
   * Logins a previous credentials key sealed go under the current one, so the operator can drop
   * that key (credentials-keys.ts): at every worker's start, and at each retention round (an API
   * still on the old key may have set one since). A pass with nothing to seal only reads. Never
   * rejects.
   */
  private async resealLogins(store: RegistryCredentialStore): Promise<void> {
    try {
      const { resealed, unreadable } = await store.resealStale();
      if (resealed > 0) {
        this.logger.info({ resealed }, 'registry logins sealed again under the current credentials key');
      }
      if (unreadable > 0) {
        this.logger.warn(
          { unreadable },
          'registry logins no credentials key opens (KILN_CREDENTIALS_PREVIOUS_KEYS): builds go without them until their owners set them again',
        );
      }
    } catch (err) {
      this.logger.warn({ err: (err as Error).message }, 'sealing registry logins again failed');
    }
  }

  /**
   * One retention pass now, as of `now` (tests pass a date far ahead); the schedule calls it
   * without a date. See retention.ts.
   */
  runRetentionOnce(now: Date = new Date()): Promise<RetentionReport> {
    if (!this.lifecycle || !this.storage) throw new Error('the worker is not started');
    return runRetentionOnce(
      {
        lifecycle: this.lifecycle,
        storage: this.storage,
        logger: this.logger,
        days: this.config.retention.days,
        contextDays: this.config.retention.contextDays,
        ...(this.config.buildCache ? { buildCacheMaxBytes: this.config.buildCache.maxBytes } : {}),
      },
      now,
    );
  }

  /**
   * A job failed for good (attempts used up, or stalled too often) without runBuild having ended
   * its row (its own final write failed, or it never got that far): make sure the row is final.
   */
  private async onFailed(job: Job<BuildJobData>, err: Error): Promise<void> {
    // BullMQ fails a job that stalled too often with an UnrecoverableError of its own, at its
    // next pick-up, before runBuild is called: its message is the job's deferred failure.
    const stalled = job.deferredFailure !== undefined && err.message === job.deferredFailure;
    // runBuild wrote the final state itself, or found that a newer attempt owns the row.
    if (err.name === 'UnrecoverableError' && !stalled) return;
    const attempts = job.opts.attempts ?? 1;
    const final = job.attemptsMade >= attempts || job.finishedOn !== undefined;
    const buildId = job.data?.buildId ?? job.id;
    if (!final || !this.lifecycle || !this.poolInstance || !buildId) return;
    const errorCode = err instanceof NoBuilderAvailableError ? 'no_builder_available' : 'infrastructure';
    try {
      const build = await this.lifecycle.repo.byId(buildId);
      // A worker that stalled (its event loop blocked, its BullMQ connection gone) may still be
      // running the build: its own final write ends it, or the reconciler once its lease expires.
      if (!build || (await runsWithLiveLease(this.poolInstance, build))) return;
      const result = await this.lifecycle.fail(buildId, {
        code: errorCode,
        message: err.message,
        // BullMQ gives up on a job whose worker kept vanishing (stalled): that attempt was lost.
        attempt: { outcome: stalled ? 'lost' : 'failed' },
        // Only from the attempt read here, not one another worker starts meanwhile.
        guard: { attempts: build.attempts },
        logTail: `\nERROR: ${err.message}\n`,
      });
      if (result.applied) {
        this.logger.warn(
          { buildId, errorCode, err: err.message },
          'job failed for good: build marked failed',
        );
      }
    } catch (e) {
      this.logger.error(
        { buildId, err: (e as Error).message },
        'could not mark a failed job’s build as failed',
      );
    }
  }

  /**
   * Stops taking jobs, lets running builds finish for up to `graceMs`, then aborts the rest and
   * hands them back to the queue (another worker retries them), and closes every connection.
   */
  stop(graceMs = this.deps.shutdownGraceMs ?? 30_000): Promise<void> {
    this.stopping ??= this.shutdown(graceMs);
    return this.stopping;
  }

  private async shutdown(graceMs: number): Promise<void> {
    const { logger } = this;
    logger.info({ running: this.active.size, graceMs }, 'worker stopping');
    // close() stops fetching and resolves once the running jobs have settled. First, with the
    // grace timer: a retention pass against a slow store can take minutes, and waiting for it
    // here kept taking jobs and delayed the hand-back past what the orchestrator waits.
    const closing = this.worker?.close() ?? Promise.resolve();
    const maintenance = Promise.all([
      this.reconcilerInstance?.stop(),
      this.retention?.stop(),
      this.startupReseal,
    ]);
    let timer: NodeJS.Timeout | undefined;
    const graceOver = new Promise<'timeout'>((resolve) => {
      timer = setTimeout(() => resolve('timeout'), graceMs);
    });
    const first = await Promise.race([closing.then(() => 'closed' as const), graceOver]);
    clearTimeout(timer);
    if (first === 'timeout' && this.active.size > 0) {
      logger.warn(
        { builds: this.active.ids() },
        'grace period over: handing running builds back to the queue',
      );
      this.active.shutDown('the worker is shutting down');
    }
    await closing.catch((err: unknown) => logger.warn({ err: (err as Error).message }, 'closing the worker'));
    // Before the connections they use close; a pass cut short by a kill is redone by the next.
    await maintenance.catch((err: unknown) =>
      logger.warn({ err: (err as Error).message }, 'stopping maintenance'),
    );
    // After the builds: the last of them may still have events to enqueue.
    await this.eventsInstance?.stop();
    await this.cancel?.stop();
    await this.queue?.close().catch(() => {});
    await this.poolInstance?.close();
    for (const conn of [this.redis, this.bullConnection]) {
      await conn?.quit().catch(() => conn.disconnect());
    }
    if (!this.deps.prisma) await this.prisma?.$disconnect().catch(() => {});
    await this.tracing.shutdown();
    logger.info('worker stopped');
  }
}

export function createWorker(config: KilnConfig, deps: WorkerDeps = {}): KilnWorker {
  return new KilnWorker(config, deps);
}
