/**
 * Makes the queue agree with the database, so an accepted build is never lost:
 * - a `queued` row (older than a few seconds, so the API had time to enqueue it) whose BullMQ job
 *   is missing — Redis lost it — or already final is enqueued again, once its uploaded context is
 *   stored (the API stores it after the insert, and a large one takes a while);
 * - a `running` row whose builder lease has been gone for longer than the lease TTL — the worker
 *   running it died — goes back to `queued` and is enqueued again (or fails, once it has used up
 *   its attempts).
 * Every worker process runs one; they may overlap: `queue.add` with the build's id as job id is
 * idempotent, and row updates are conditional.
 */
import {
  BUILD_JOB_NAME,
  type Build,
  type BuildJobData,
  type BuildLifecycle,
  buildJobOptions,
  type Logger,
  type ObjectStorage,
} from '@kiln/core';
import type { Job, Queue } from 'bullmq';
import type { BuilderPool } from './builders/pool.js';

export interface ReconcilerOptions {
  /** Moves the rows (lose, fail); its repository reads them. */
  lifecycle: BuildLifecycle;
  queue: Queue<BuildJobData>;
  pool: BuilderPool;
  logger: Logger;
  /** BullMQ attempts of a (re-)enqueued job, and most attempts a build gets in all. */
  attempts: number;
  /** Period; default 15 s; 0 turns the timer off (runOnce() still works). */
  intervalMs?: number;
  /** A queued row younger than this is left alone (the API may be enqueueing it); default 5 s. */
  queuedGraceMs?: number;
  /** Where the API stores contexts: a row whose context is not there yet is still being stored. */
  storage: ObjectStorage;
  /**
   * How long the API may take to store an uploaded context (it enqueues the build once stored);
   * default 15 minutes. Older rows are enqueued anyway, and their worker reports the context missing.
   */
  contextStoreGraceMs?: number;
  /** Rows looked at per pass and state; default 500. */
  batchSize?: number;
}

export interface ReconcileReport {
  /** Queued rows whose job was missing or final, enqueued again. */
  requeued: string[];
  /** Running rows whose worker was lost, back to queued and enqueued again. */
  recovered: string[];
  /** Rows failed because they had used up their attempts. */
  failed: string[];
}

const FINAL_JOB_STATES = new Set(['completed', 'failed']);

export class Reconciler {
  private readonly o: Required<
    Omit<ReconcilerOptions, 'queue' | 'lifecycle' | 'pool' | 'logger' | 'storage'>
  > &
    ReconcilerOptions;
  private timer: NodeJS.Timeout | undefined;
  private running: Promise<ReconcileReport> | undefined;
  /** Attempts of running builds seen without a live lease (`<build id>#<attempt>`): since when (Redis time, ms). */
  private readonly leaseMissingSince = new Map<string, number>();

  constructor(options: ReconcilerOptions) {
    this.o = {
      intervalMs: 15_000,
      queuedGraceMs: 5000,
      contextStoreGraceMs: 15 * 60_000,
      batchSize: 500,
      ...options,
    };
  }

  /** Passes every interval, and one at once: builds Redis lost while no worker ran need not wait. */
  start(): void {
    if (this.timer || this.o.intervalMs <= 0) return;
    const pass = () => {
      void this.runOnce().catch((err: unknown) => {
        this.o.logger.warn({ err: (err as Error).message }, 'reconciler pass failed');
      });
    };
    this.timer = setInterval(pass, this.o.intervalMs);
    this.timer.unref();
    pass();
  }

  async stop(): Promise<void> {
    clearInterval(this.timer);
    this.timer = undefined;
    await this.running?.catch(() => {});
  }

  /** One pass (passes never overlap within a process). */
  runOnce(): Promise<ReconcileReport> {
    this.running ??= this.pass().finally(() => {
      this.running = undefined;
    });
    return this.running;
  }

  private async pass(): Promise<ReconcileReport> {
    const report: ReconcileReport = { requeued: [], recovered: [], failed: [] };
    await this.reconcileQueued(report);
    await this.reconcileRunning(report);
    const { logger } = this.o;
    if (report.requeued.length > 0) {
      logger.warn({ builds: report.requeued }, 'reconciler: re-enqueued queued builds whose job was missing');
    }
    if (report.recovered.length > 0) {
      logger.warn(
        { builds: report.recovered },
        'reconciler: re-enqueued running builds whose worker was lost',
      );
    }
    if (report.failed.length > 0) {
      logger.warn({ builds: report.failed }, 'reconciler: failed builds that used up their attempts');
    }
    return report;
  }

  private async jobOf(id: string): Promise<{ job: Job<BuildJobData> | undefined; state: string }> {
    const job = await this.o.queue.getJob(id);
    if (!job) return { job: undefined, state: 'missing' };
    const state = await job.getState();
    return { job, state };
  }

  /** Enqueues the build unless its job is alive; a final job is removed first. True when it enqueued. */
  private async enqueue(id: string, job: Job<BuildJobData> | undefined, state: string): Promise<boolean> {
    if (job && !FINAL_JOB_STATES.has(state) && state !== 'unknown') return false;
    if (job) {
      try {
        await job.remove();
      } catch (err) {
        this.o.logger.warn(
          { buildId: id, err: (err as Error).message },
          'reconciler: could not remove a final job',
        );
        return false;
      }
    }
    // Its rank among the project's queued builds keeps the queue fair (see buildJobOptions).
    const rank = await this.o.lifecycle.repo.queuedRank(id);
    await this.o.queue.add(BUILD_JOB_NAME, { buildId: id }, buildJobOptions(id, this.o.attempts, rank));
    return true;
  }

  private async reconcileQueued(report: ReconcileReport): Promise<void> {
    const { lifecycle } = this.o;
    const rows = await lifecycle.repo.queuedBefore(
      new Date(Date.now() - this.o.queuedGraceMs),
      this.o.batchSize,
    );
    for (const row of rows) {
      const { job, state } = await this.jobOf(row.id);
      if (job && !FINAL_JOB_STATES.has(state) && state !== 'unknown') continue;
      if (await this.contextBeingStored(row)) continue;
      // Re-check: the row may have moved on while we looked at the queue.
      if ((await lifecycle.repo.statusOf(row.id)) !== 'queued') continue;
      if (state === 'failed' && row.attempts >= this.o.attempts) {
        const message = `the build failed ${row.attempts} times: ${job?.failedReason ?? 'unknown error'}`;
        const failed = await lifecycle.fail(row.id, {
          code: 'infrastructure',
          message,
          // The attempts ran and failed; any left open had lost their worker.
          attempt: null,
          guard: { attempts: row.attempts },
          logTail: `\nERROR: ${message}\n`,
        });
        if (failed.applied) report.failed.push(row.id);
        continue;
      }
      if (await this.enqueue(row.id, job, state)) report.requeued.push(row.id);
    }
  }

  /**
   * The API inserts an upload's row, then stores its context (a large one can take minutes),
   * then enqueues: a job added before the object exists would fail the build as context_missing.
   */
  private async contextBeingStored(
    row: Pick<Build, 'id' | 'attempts' | 'contextKey' | 'createdAt'>,
  ): Promise<boolean> {
    if (!row.contextKey || row.attempts > 0) return false;
    if (row.createdAt.getTime() < Date.now() - this.o.contextStoreGraceMs) return false;
    // Storage failing is no reason to skip the rest of the pass: ask again next time.
    const stored = await this.o.storage.head(row.contextKey).catch((err: unknown) => {
      this.o.logger.warn(
        { buildId: row.id, err: (err as Error).message },
        'reconciler: could not tell whether a context is stored; looking again next pass',
      );
      return undefined;
    });
    return stored === undefined;
  }

  private async reconcileRunning(report: ReconcileReport): Promise<void> {
    const { lifecycle, pool } = this.o;
    const rows = await lifecycle.repo.running(this.o.batchSize);
    const now = await pool.now();
    const seen = new Set<string>();
    for (const row of rows) {
      // Per attempt: a new attempt (another worker took the job over) is not timed from the old one.
      const key = `${row.id}#${row.attempts}`;
      seen.add(key);
      const expiry = row.builder ? await pool.leaseExpiry(row.builder, row.id) : undefined;
      if (expiry !== undefined && expiry > now) {
        this.leaseMissingSince.delete(key);
        continue;
      }
      // Timed from when this reconciler first found it expired or gone, not from its expiry: after
      // Redis was away, every lease looks long expired until its worker's next renewal.
      const since = this.leaseMissingSince.get(key) ?? now;
      this.leaseMissingSince.set(key, since);
      if (now - since <= pool.leaseTtlMs) continue;
      // Only the attempt judged lost (lifecycle.lose guards on attempts and builder): if another
      // worker started a new one since the row was read, taking that build away would let a third
      // run it beside the second (both to completion).
      const outcome = await lifecycle.lose(
        row,
        'the worker running this build stopped (its builder lease expired)',
        this.o.attempts,
      );
      this.leaseMissingSince.delete(key);
      if (outcome === 'failed') report.failed.push(row.id);
      if (outcome !== 'requeued') continue;
      const { job, state } = await this.jobOf(row.id);
      // An active job holds the dead worker's lock: BullMQ's stalled check hands it to another worker.
      await this.enqueue(row.id, job, state);
      report.recovered.push(row.id);
    }
    for (const id of this.leaseMissingSince.keys()) if (!seen.has(id)) this.leaseMissingSince.delete(id);
  }
}
