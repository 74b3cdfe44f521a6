/**
 * Runs the retention pass about once per interval on one worker of all. Every worker's timer
 * tries, each interval, to create a Redis key (SET NX PX) that lives a little less than an
 * interval; the worker that creates it runs the pass, the others skip that round. The key is not
 * deleted after the pass, so the pass runs about once per interval however many workers there
 * are and however often they restart. A pass that outlasts the key may overlap the next one:
 * harmless, every step of it is conditional or idempotent (see retention.ts).
 */
import { randomBytes } from 'node:crypto';
import type { Logger } from '@kiln/core';
import type { Redis } from 'ioredis';

export interface RetentionScheduleOptions {
  redis: Redis;
  logger: Logger;
  /** Namespace of the lock key; default `kiln`. */
  keyPrefix?: string;
  /** Period; 0 turns the timer off. */
  intervalMs: number;
  /** The pass. */
  run: () => Promise<unknown>;
}

export class RetentionSchedule {
  private timer: NodeJS.Timeout | undefined;
  private running: Promise<boolean> | undefined;
  private readonly token = randomBytes(8).toString('hex');

  constructor(private readonly o: RetentionScheduleOptions) {}

  get lockKey(): string {
    return `${this.o.keyPrefix ?? 'kiln'}:retention:lock`;
  }

  /** One round now (a worker started after a long pause need not wait), then one per interval. */
  start(): void {
    if (this.timer || this.o.intervalMs <= 0) return;
    this.timer = setInterval(() => void this.tick(), this.o.intervalMs);
    this.timer.unref();
    void this.tick();
  }

  async stop(): Promise<void> {
    clearInterval(this.timer);
    this.timer = undefined;
    await this.running;
  }

  /** One round: runs the pass if this worker wins it; true when it ran. Rounds never overlap in a process. */
  tick(): Promise<boolean> {
    this.running ??= this.round().finally(() => {
      this.running = undefined;
    });
    return this.running;
  }

  private async round(): Promise<boolean> {
    const { redis, logger, intervalMs } = this.o;
    // A little shorter than the interval, so timer jitter cannot make the next round find it.
    const ttlMs = Math.max(1, Math.floor(intervalMs * 0.9));
    try {
      const won = await redis.set(this.lockKey, this.token, 'PX', ttlMs, 'NX');
      if (won !== 'OK') return false;
      await this.o.run();
      return true;
    } catch (err) {
      logger.warn({ err: (err as Error).message }, 'retention pass failed');
      return false;
    }
  }
}
