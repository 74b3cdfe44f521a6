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
    private readonly what: string,
  ) {}

  async run<T>(task: () => Promise<T>): Promise<T> {
    if (this.running >= this.active) {
      if (this.queue.length >= this.waiting) {
        throw new AppError('rate_limited', `too many ${this.what} at once; retry shortly`);
      }
      // The slot is handed over by the task that ends, so `running` never drops in between.
      await new Promise<void>((resolve) => this.queue.push(resolve));
    } else this.running++;
    try {
      return await task();
    } finally {
      const next = this.queue.shift();
      if (next) next();
      else this.running--;
    }
  }
}
