import { randomUUID } from 'node:crypto';
import { AppError, logFollowersKey } from '@kiln/core';
import type { Redis } from 'ioredis';

/**
 * How long a follower's entry lives unless renewed: an API process that dies without releasing
 * its streams frees their places after this. Renewed every third of it.
 */
export const FOLLOWER_ENTRY_TTL_MS = 15_000;

// A ZSET per project, stream id → expiry in Redis server time (ms), so every replica counts the
// same streams and clocks of API hosts do not matter. Entries past their expiry are dropped first.
const NOW = `local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)`;
/** KEYS[1] the project's set; ARGV: the cap, the TTL, the new id. Returns {admitted 0|1, count}. */
const ADMIT = `${NOW}
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
local count = redis.call('ZCARD', KEYS[1])
if count >= tonumber(ARGV[1]) then return {0, count} end
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[3])
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return {1, count + 1}`;
/** KEYS[1] the project's set; ARGV: the TTL, then the ids of this process's open streams. */
const RENEW = `${NOW}
for i = 2, #ARGV do redis.call('ZADD', KEYS[1], now + tonumber(ARGV[1]), ARGV[i]) end
redis.call('PEXPIRE', KEYS[1], ARGV[1])
return #ARGV - 1`;

interface Open {
  projectId: string;
  stop: () => void;
}

/**
 * The live log streams of a project, counted across every API replica in Redis: at most
 * `maxPerProject` at once. Each process renews its own streams' entries, so those of a process
 * that died expire; every stream of this process can be ended at once (shutdown).
 */
export class LogFollowers {
  private readonly open = new Map<string, Open>();
  private readonly renewal: NodeJS.Timeout;

  constructor(
    private readonly redis: Redis,
    private readonly maxPerProject: number,
    private readonly onRenewError: (err: Error) => void = () => undefined,
  ) {
    this.renewal = setInterval(() => {
      this.renew().catch((err: Error) => this.onRenewError(err));
    }, FOLLOWER_ENTRY_TTL_MS / 3);
    this.renewal.unref();
  }

  /**
   * Counts a new stream of `projectId`, which `stop` ends; throws `rate_limited` past the cap.
   * Returns the release function to call once the stream is over.
   */
  async admit(projectId: string, stop: () => void): Promise<() => void> {
    const id = randomUUID();
    const key = logFollowersKey(projectId);
    const [admitted, count] = (await this.redis
      .eval(ADMIT, 1, key, this.maxPerProject, FOLLOWER_ENTRY_TTL_MS, id)
      .catch(() => {
        throw new AppError('unavailable', 'live logs are unavailable for a moment (Redis); try again');
      })) as [number, number];
    if (admitted !== 1) {
      throw new AppError(
        'rate_limited',
        `this project already follows ${count} live logs (KILN_MAX_LOG_FOLLOWERS_PER_PROJECT, across every API); close one or read the log as text`,
      );
    }
    this.open.set(id, { projectId, stop });
    let released = false;
    return () => {
      if (released) return;
      released = true;
      this.open.delete(id);
      // Lost (Redis away), the entry expires on its own.
      this.redis.zrem(key, id).catch(() => undefined);
    };
  }

  /** Renews the entries of this process's open streams, one script call per project. */
  async renew(): Promise<void> {
    const byProject = new Map<string, string[]>();
    for (const [id, { projectId }] of this.open) {
      const ids = byProject.get(projectId);
      if (ids) ids.push(id);
      else byProject.set(projectId, [id]);
    }
    for (const [projectId, ids] of byProject) {
      await this.redis.eval(RENEW, 1, logFollowersKey(projectId), FOLLOWER_ENTRY_TTL_MS, ...ids);
    }
  }

  /** Ends every stream (each says why and releases itself), and the renewal. */
  stopAll(): void {
    clearInterval(this.renewal);
    for (const { stop } of [...this.open.values()]) stop();
  }
}
