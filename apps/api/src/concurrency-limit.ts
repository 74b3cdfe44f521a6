import { AppError } from '@kiln/core';

/**
 * At most `active` tasks at once, `waiting` more queued in arrival order; past that a task is
 * refused at once (`rate_limited`) rather than queued without bound, since each queued task holds
 * its request (and its body) in memory.
 */
export class ConcurrencyLimit {
  private running = 0;
  private readonly queue: Array<() => void> = [];

  constructor(
    private readonly active: number,
    private readonly waiting: number,
    what: string,
    /** The refusal's message, given how many run and wait; default "too many <what> at once". */
    private readonly refusal: (running: number, waiting: number) => string = () =>
      `too many ${what} at once; retry shortly`,
  ) {}

  /** Nothing runs and nothing waits. */
  get idle(): boolean {
    return this.running === 0 && this.queue.length === 0;
  }

  /** Takes a slot, waiting for one if need be; the function returned gives it back (once). */
  async acquire(): Promise<() => void> {
    if (this.running >= this.active) {
      if (this.queue.length >= this.waiting) {
        throw new AppError('rate_limited', this.refusal(this.running, this.queue.length));
      }
      // The slot is handed over by the task that ends, so `running` never drops in between.
      await new Promise<void>((resolve) => this.queue.push(resolve));
    } else this.running++;
    let given = false;
    return () => {
      if (given) return;
      given = true;
      const next = this.queue.shift();
      if (next) next();
      else this.running--;
    };
  }

  async run<T>(task: () => Promise<T>): Promise<T> {
    const release = await this.acquire();
    try {
      return await task();
    } finally {
      release();
    }
  }
}

/**
 * A ConcurrencyLimit per key (a project, a client address), made on first use and forgotten once
 * idle, so the map holds only keys in use now.
 */
export class KeyedConcurrencyLimit {
  private readonly limits = new Map<string, ConcurrencyLimit>();

  constructor(private readonly make: () => ConcurrencyLimit) {}

  /** Takes a slot of `key` (ConcurrencyLimit.acquire); the function returned gives it back (once). */
  async acquire(key: string): Promise<() => void> {
    let limit = this.limits.get(key);
    if (!limit) {
      limit = this.make();
      this.limits.set(key, limit);
    }
    const mine = limit;
    const release = await mine.acquire();
    return () => {
      release();
      if (mine.idle && this.limits.get(key) === mine) this.limits.delete(key);
    };
  }
}
