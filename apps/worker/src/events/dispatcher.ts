/**
 * Delivers completion events: a BullMQ Worker on QUEUE_EVENTS POSTs each pending EventDelivery
 * (see @kiln/core's outbox) and records every attempt in EventAttempt. A non-2xx answer or no
 * answer throws, so BullMQ retries with exponential backoff; the row's own attempt count decides
 * when to give up (`failed`), so re-enqueueing never grants extra attempts. A sweep enqueues
 * pending deliveries whose job is missing (Redis lost it, or the writer crashed between its
 * commit and the enqueue), as the build reconciler does for builds. A receiver whose address is
 * refused (SSRF, see pin-address.ts) fails the delivery at once: nothing was sent, and another
 * try would only give a rebinding name another chance to point somewhere else.
 */
import {
  countBuildEvent,
  type EventJobData,
  eventBody,
  eventJobs,
  type Logger,
  type Network,
  Prisma,
  type PrismaClient,
  QUEUE_EVENTS,
} from '@kiln/core';
import { DelayedError, type Job, Queue, Worker } from 'bullmq';
import type { Redis } from 'ioredis';
import type { Resolve } from './pin-address.js';
import { postEvent } from './post.js';

/** What writers of final states need: enqueue the deliveries their transaction inserted. */
export interface EventEnqueuer {
  /** Never throws: a delivery left unqueued is picked up by the sweep. */
  enqueue(deliveryIds: readonly string[]): Promise<void>;
}

export interface EventDispatcherOptions {
  prisma: PrismaClient;
  /** A BullMQ connection (maxRetriesPerRequest: null). */
  connection: Redis;
  /** A commands connection, where each attempt's outcome is counted for /metrics; none: not counted. */
  counters?: Redis;
  logger: Logger;
  /** Attempts per delivery, the first retry's delay (doubling after), and one POST's deadline. */
  attempts: number;
  backoffMs: number;
  timeoutMs: number;
  /** Special-purpose networks receivers may be in (KILN_EVENT_ALLOWED_NETWORKS). */
  allowedNetworks: readonly Network[];
  /** Name resolution of receivers; the system's by default. */
  resolve?: Resolve;
  /** BullMQ key prefix; default BullMQ's. */
  prefix?: string;
  /** Deliveries POSTed at once by this process; default 16. */
  concurrency?: number;
  /**
   * Of those, at most this many for one project; default a quarter of `concurrency` (at least 1).
   * Another of its deliveries goes back to the queue for a moment, uncounted: one project's
   * receivers that never answer hold that many places, not every place, while the others' wait.
   */
  perProjectConcurrency?: number;
  /** Sweep period; default 15 s; 0 = no timer (sweep() still works). */
  sweepIntervalMs?: number;
  /** Pending rows younger than this are left to their writer, which is enqueueing them; default 5 s. */
  sweepGraceMs?: number;
  /** Rows looked at per sweep; default 500. */
  batchSize?: number;
}

const FINAL_JOB_STATES = new Set(['completed', 'failed', 'unknown']);
/** How long a delivery waits while its project has all its places taken (plus up to as much again). */
const PROJECT_BUSY_DELAY_MS = 1000;

export class EventDispatcher implements EventEnqueuer {
  private queue: Queue<EventJobData> | undefined;
  private worker: Worker<EventJobData> | undefined;
  private timer: NodeJS.Timeout | undefined;
  private sweeping: Promise<string[]> | undefined;
  /** POSTs in flight in this process, per project. */
  private readonly inFlight = new Map<string, number>();
  private readonly perProject: number;

  constructor(private readonly o: EventDispatcherOptions) {
    this.perProject = o.perProjectConcurrency ?? Math.max(1, Math.floor((o.concurrency ?? 16) / 4));
  }

  async start(): Promise<void> {
    if (this.worker) return;
    const { connection, logger } = this.o;
    const prefix = this.o.prefix !== undefined ? { prefix: this.o.prefix } : {};
    this.queue = new Queue<EventJobData>(QUEUE_EVENTS, { connection, ...prefix });
    this.queue.on('error', (err) => logger.warn({ err: err.message }, 'event queue error'));
    this.worker = new Worker<EventJobData>(QUEUE_EVENTS, (job, token) => this.deliver(job, token), {
      connection,
      concurrency: this.o.concurrency ?? 16,
      ...prefix,
    });
    this.worker.on('error', (err) => logger.warn({ err: err.message }, 'event worker error'));
    await this.worker.waitUntilReady();
    const interval = this.o.sweepIntervalMs ?? 15_000;
    if (interval > 0) {
      const pass = () => {
        void this.sweep().catch((err: unknown) => {
          logger.warn({ err: (err as Error).message }, 'event sweep failed');
        });
      };
      this.timer = setInterval(pass, interval);
      this.timer.unref();
      pass();
    }
  }

  /** Stops sweeping and taking jobs; resolves once the POSTs in flight have settled. */
  async stop(): Promise<void> {
    clearInterval(this.timer);
    this.timer = undefined;
    await this.sweeping?.catch(() => {});
    await this.worker?.close().catch((err: unknown) => {
      this.o.logger.warn({ err: (err as Error).message }, 'closing the event worker');
    });
    await this.queue?.close().catch(() => {});
  }

  async enqueue(deliveryIds: readonly string[]): Promise<void> {
    if (deliveryIds.length === 0) return;
    try {
      if (!this.queue) throw new Error('the event dispatcher is not started');
      await this.queue.addBulk(eventJobs(deliveryIds, this.o));
    } catch (err) {
      this.o.logger.warn(
        { deliveries: deliveryIds, err: (err as Error).message },
        'enqueueing events failed; the sweep will enqueue them',
      );
    }
  }

  /** One sweep (sweeps never overlap within a process); returns the deliveries it enqueued. */
  sweep(): Promise<string[]> {
    this.sweeping ??= this.sweepPass().finally(() => {
      this.sweeping = undefined;
    });
    return this.sweeping;
  }

  private async sweepPass(): Promise<string[]> {
    const queue = this.queue;
    if (!queue) throw new Error('the event dispatcher is not started');
    const rows = await this.o.prisma.eventDelivery.findMany({
      where: { status: 'pending', createdAt: { lt: new Date(Date.now() - (this.o.sweepGraceMs ?? 5000)) } },
      select: { id: true },
      orderBy: { createdAt: 'asc' },
      take: this.o.batchSize ?? 500,
    });
    const missing: string[] = [];
    for (const { id } of rows) {
      const job = await queue.getJob(id);
      if (job) {
        if (!FINAL_JOB_STATES.has(await job.getState())) continue;
        // A finished job keeps its id: it must go before the delivery can be queued again.
        const removed = await job.remove().then(
          () => true,
          () => false,
        );
        if (!removed) continue;
      }
      missing.push(id);
    }
    if (missing.length > 0) {
      await queue.addBulk(eventJobs(missing, this.o));
      this.o.logger.warn({ deliveries: missing }, 'event sweep: enqueued pending deliveries without a job');
    }
    return missing;
  }

  /** Whether the project has every one of its places in this process taken. */
  private busy(projectId: string): boolean {
    return (this.inFlight.get(projectId) ?? 0) >= this.perProject;
  }

  /** Sends the job back for a moment, uncounted, noting whose it is for its next turn. */
  private async sendBack(job: Job<EventJobData>, token: string, projectId: string): Promise<never> {
    if (job.data?.projectId !== projectId) await job.updateData({ ...job.data, projectId });
    await job.moveToDelayed(Date.now() + PROJECT_BUSY_DELAY_MS * (1 + Math.random()), token);
    throw new DelayedError(`project ${projectId} has all its delivery places taken`);
  }

  private async deliver(job: Job<EventJobData>, token?: string): Promise<void> {
    const id = job.data?.deliveryId ?? job.id;
    if (!id) return;
    // One sent back before says whose it is: while that project is still busy, no database read.
    const known = job.data?.projectId;
    if (known !== undefined && token && this.busy(known)) await this.sendBack(job, token, known);
    const { prisma, logger } = this.o;
    const delivery = await prisma.eventDelivery.findUnique({ where: { id }, include: { endpoint: true } });
    if (delivery?.status !== 'pending') return;
    const log = logger.child({ deliveryId: id, endpointId: delivery.endpointId, event: delivery.event });
    if (delivery.endpoint.disabledAt || delivery.attempts >= this.o.attempts) {
      // Disabled meanwhile, or attempts used up by earlier jobs (this one came from the sweep).
      await prisma.eventDelivery.updateMany({ where: { id, status: 'pending' }, data: { status: 'failed' } });
      return;
    }
    const { projectId } = delivery.endpoint;
    // Checked and taken in one step: an await between them would let every job through.
    if (token && this.busy(projectId)) await this.sendBack(job, token, projectId);
    this.inFlight.set(projectId, (this.inFlight.get(projectId) ?? 0) + 1);
    const number = delivery.attempts + 1;
    const started = performance.now();
    const outcome = await postEvent({
      url: delivery.endpoint.url,
      body: eventBody(delivery),
      secret: delivery.endpoint.secret,
      deliveryId: id,
      timeoutMs: this.o.timeoutMs,
      allowedNetworks: this.o.allowedNetworks,
      ...(this.o.resolve ? { resolve: this.o.resolve } : {}),
    }).finally(() => {
      const left = (this.inFlight.get(projectId) ?? 1) - 1;
      if (left > 0) this.inFlight.set(projectId, left);
      else this.inFlight.delete(projectId);
    });
    const durationMs = Math.round(performance.now() - started);
    const last = !outcome.ok && (outcome.refused === true || number >= this.o.attempts);
    const status = outcome.ok ? 'delivered' : last ? 'failed' : 'pending';
    try {
      await prisma.$transaction([
        prisma.eventAttempt.create({
          data: {
            deliveryId: id,
            number,
            statusCode: outcome.statusCode ?? null,
            error: outcome.error ?? null,
            durationMs,
          },
        }),
        prisma.eventDelivery.update({
          where: { id },
          data: { attempts: number, status, ...(outcome.ok ? { deliveredAt: new Date() } : {}) },
        }),
      ]);
    } catch (err) {
      // Another run of this delivery recorded attempt `number` first (a stalled job run twice).
      if (err instanceof Prisma.PrismaClientKnownRequestError && err.code === 'P2002') return;
      throw err;
    }
    if (this.o.counters) {
      const counted = status === 'pending' ? 'retrying' : status;
      await countBuildEvent(this.o.counters, { kind: 'delivery', status: counted });
    }
    if (outcome.ok) {
      log.info({ attempt: number, statusCode: outcome.statusCode, durationMs }, 'event delivered');
      return;
    }
    log.warn({ attempt: number, last, err: outcome.error, durationMs }, 'event delivery attempt failed');
    // Retried by BullMQ with backoff; the last attempt ends here (the row says `failed`).
    if (!last) throw new Error(outcome.error ?? 'delivery failed');
  }
}
