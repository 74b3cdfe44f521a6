/**
 * Builder capacity shared by every worker process: per builder a Redis ZSET of buildId → expiry
 * (Redis server time, ms). Lua scripts drop expired leases and check the count against the
 * builder's concurrency atomically, so two processes never both take the last slot. A worker
 * that dies leaves a lease that expires by itself.
 */
import { builderLeaseKey } from '@kiln/core';
import type { Redis } from 'ioredis';

// Redis server time in ms: every worker process agrees on it whatever its own clock says.
const NOW = `local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)`;

/** KEYS[1] lease zset; ARGV buildId, concurrency, ttlMs → 1 when leased (or already held). */
const ACQUIRE = `${NOW}
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if redis.call('ZSCORE', KEYS[1], ARGV[1]) or redis.call('ZCARD', KEYS[1]) < tonumber(ARGV[2]) then
  redis.call('ZADD', KEYS[1], now + tonumber(ARGV[3]), ARGV[1])
  return 1
end
return 0`;

/** KEYS[1] lease zset; ARGV buildId, ttlMs → 1 if the lease still existed, 0 if it had to be re-created. */
const RENEW = `${NOW}
local existed = redis.call('ZSCORE', KEYS[1], ARGV[1])
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1])
if existed and tonumber(existed) > now then return 1 end
return 0`;

/** KEYS[1] lease zset → live leases. */
const COUNT = `${NOW}
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
return redis.call('ZCARD', KEYS[1])`;

export class LeaseStore {
  constructor(
    private readonly redis: Redis,
    private readonly prefix: string,
    /** A lease not renewed for this long is gone. */
    readonly ttlMs: number,
  ) {}

  key(address: string): string {
    return builderLeaseKey(address, this.prefix);
  }

  /** Leases `address` for `buildId` if it has room, or if the build already holds the lease. */
  async tryAcquire(address: string, buildId: string, concurrency: number): Promise<boolean> {
    const ok = await this.redis.eval(
      ACQUIRE,
      1,
      this.key(address),
      buildId,
      String(concurrency),
      String(this.ttlMs),
    );
    return Number(ok) === 1;
  }

  /** Extends the lease; false when it had expired and was re-created. */
  async renew(address: string, buildId: string): Promise<boolean> {
    const existed = await this.redis.eval(RENEW, 1, this.key(address), buildId, String(this.ttlMs));
    return Number(existed) === 1;
  }

  async release(address: string, buildId: string): Promise<void> {
    await this.redis.zrem(this.key(address), buildId);
  }

  /** Live leases of each address, in the given order (one round trip). */
  async counts(addresses: readonly string[]): Promise<number[]> {
    const pipeline = this.redis.pipeline();
    for (const address of addresses) pipeline.eval(COUNT, 1, this.key(address));
    const results = (await pipeline.exec()) ?? [];
    return addresses.map((_, i) => {
      const [err, value] = results[i] ?? [new Error('no reply'), 0];
      if (err) throw err;
      return Number(value);
    });
  }

  /** Expiry (Redis time, ms) of a build's lease on `address`, if it has one. */
  async expiry(address: string, buildId: string): Promise<number | undefined> {
    const score = await this.redis.zscore(this.key(address), buildId);
    return score === null ? undefined : Number(score);
  }

  /** Redis server time in ms (the clock leases are measured with). */
  async now(): Promise<number> {
    const [seconds, micros] = await this.redis.time();
    return Number(seconds) * 1000 + Math.floor(Number(micros) / 1000);
  }
}
