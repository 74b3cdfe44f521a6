/**
 * Database writes that must not be lost to a PostgreSQL restart: a build that finished while the
 * database was away is recorded once it is back, instead of failing the job (which would run the
 * whole build again, or leave the row `running` until the reconciler notices).
 */
import { isDatabaseUnavailable, type Logger } from '@kiln/core';

export interface DbRetryOptions {
  logger: Logger;
  /** Longest time to keep trying; default 10 minutes. The last error is thrown after it. */
  maxMs?: number;
  /** Checked before each wait: true gives up at once (the worker is stopping). */
  giveUp?: () => boolean;
}

const FIRST_DELAY_MS = 250;
const MAX_DELAY_MS = 5000;

/** Runs `fn`, again and again while it fails because the database cannot be reached. */
export async function retryWhileDatabaseDown<T>(
  what: string,
  fn: () => Promise<T>,
  opts: DbRetryOptions,
): Promise<T> {
  const end = Date.now() + (opts.maxMs ?? 10 * 60_000);
  let delay = FIRST_DELAY_MS;
  let failures = 0;
  for (;;) {
    try {
      const result = await fn();
      if (failures > 0) opts.logger.warn({ what, failures }, 'database back: write done');
      return result;
    } catch (err) {
      if (!isDatabaseUnavailable(err) || Date.now() + delay > end || opts.giveUp?.()) throw err;
      if (failures === 0) {
        opts.logger.warn({ what, err: (err as Error).message }, 'database unavailable: retrying the write');
      }
      failures++;
      await new Promise((r) => setTimeout(r, delay));
      delay = Math.min(delay * 2, MAX_DELAY_MS);
    }
  }
}
