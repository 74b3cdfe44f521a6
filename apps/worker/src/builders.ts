/**
 * The pool of BuildKit daemons a worker builds on.
 *
 * - One BuildkitClient per address, connected lazily and replaced after a failure (the old one
 *   is closed once no running build uses it any more).
 * - Health: `listWorkers()` every few seconds, bounded by a timeout; each outcome is published
 *   in Redis with a TTL (builderHealthKey) for the API's GET /v1/builders.
 * - Capacity is shared by every worker process through leases in Redis: per builder a ZSET of
 *   buildId → expiry (Redis server time, ms). A Lua script drops expired leases, checks the count
 *   against the builder's concurrency and adds the lease atomically; a running build renews its
 *   lease, and releases it at the end. A worker that dies leaves a lease that expires by itself.
 * - Choice: the least-loaded healthy builder, the project's last builder first (cache affinity),
 *   builders that just failed this build last.
 * - Platform: a healthy check also learns the builder's default platform (recorded with each
 *   artifact) and publishes it in Redis for the API's result cache (builderPlatformsKey).
 */
import { type BuildkitClient, connect, type WorkerInfo } from '@kiln/buildkit-client';
import {
  AppError,
  builderHealthKey,
  builderLeaseKey,
  builderPlatformsKey,
  type Logger,
  type PublishedBuilderHealth,
} from '@kiln/core';
import type { Redis } from 'ioredis';

/** Thrown by `acquire()`. `capacity`: every usable builder is full; `unhealthy`: none is usable. */
export class NoBuilderAvailableError extends AppError {
  constructor(
    message: string,
    readonly reason: 'capacity' | 'unhealthy',
  ) {
    super('no_builder_available', message);
    this.name = 'NoBuilderAvailableError';
  }
}

export interface BuilderPoolOptions {
  builders: ReadonlyArray<{ address: string; concurrency: number }>;
  redis: Redis;
  logger: Logger;
  /** Namespace of the lease and affinity keys; default `kiln`. */
  keyPrefix?: string;
  /** A lease not renewed for this long is gone; default 30 s. Renewed every third of it. */
  leaseTtlMs?: number;
  /** Health check period; default 5 s; 0 turns periodic checks off. */
  healthIntervalMs?: number;
  /** Bound of one health check (connect + ListWorkers); default 3 s. */
  healthTimeoutMs?: number;
  /** How long the project → builder affinity is remembered; default 7 days. */
  affinityTtlSeconds?: number;
  /** Dials a builder; default `connect(address, { timeoutMs })` of @kiln/buildkit-client. */
  connectBuilder?: (address: string, timeoutMs: number) => Promise<BuildkitClient>;
}

export interface BuilderStatus {
  address: string;
  concurrency: number;
  /** undefined until the first check. */
  healthy: boolean | undefined;
  lastError?: string;
  checkedAt?: Date;
  /** Live leases (all worker processes). */
  load: number;
}

interface BuilderState {
  address: string;
  concurrency: number;
  healthy: boolean | undefined;
  lastError?: string;
  checkedAt?: Date;
  client?: BuildkitClient;
  connecting?: Promise<BuildkitClient>;
  checking?: Promise<boolean>;
  /** Default platform, from the last successful check. */
  platform?: string;
}

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

function withTimeout<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what} did not answer within ${ms} ms`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

const message = (err: unknown): string => (err instanceof Error ? err.message : String(err));

/**
 * The platform a daemon builds for when the build names none: the first platform of its first
 * BuildKit worker (BuildKit lists the native one first), as `os/arch[/variant]`.
 */
export function defaultPlatformOf(workers: readonly WorkerInfo[]): string | undefined {
  const p = workers[0]?.platforms[0];
  if (!p) return undefined;
  return `${p.os}/${p.architecture}${p.variant ? `/${p.variant}` : ''}`;
}

/** A builder leased for one build. Renews itself until released. */
export class Lease {
  private timer: NodeJS.Timeout | undefined;
  private released = false;
  private usedClient: BuildkitClient | undefined;

  constructor(
    private readonly pool: BuilderPool,
    readonly address: string,
    readonly buildId: string,
    renewEveryMs: number,
  ) {
    this.timer = setInterval(() => void this.renew(), renewEveryMs);
    this.timer.unref();
  }

  /** The builder's client, connecting if needed (BuildkitConnectionError when it cannot). */
  async client(): Promise<BuildkitClient> {
    const client = await this.pool.clientFor(this.address);
    if (this.usedClient !== client) {
      if (this.usedClient) this.pool.unuse(this.usedClient);
      this.pool.use(client);
      this.usedClient = client;
    }
    return client;
  }

  private async renew(): Promise<void> {
    if (this.released) return;
    try {
      await this.pool.renewLease(this.address, this.buildId);
    } catch (err) {
      this.pool.logger.warn(
        { builder: this.address, buildId: this.buildId, err: message(err) },
        'lease renewal failed',
      );
    }
  }

  async release(): Promise<void> {
    if (this.released) return;
    this.released = true;
    clearInterval(this.timer);
    if (this.usedClient) this.pool.unuse(this.usedClient);
    this.usedClient = undefined;
    await this.pool.releaseLease(this.address, this.buildId);
  }
}

export class BuilderPool {
  readonly logger: Logger;
  readonly leaseTtlMs: number;
  private readonly builders: BuilderState[];
  private readonly redis: Redis;
  private readonly prefix: string;
  private readonly healthIntervalMs: number;
  private readonly healthTimeoutMs: number;
  private readonly affinityTtlSeconds: number;
  private readonly dial: (address: string, timeoutMs: number) => Promise<BuildkitClient>;
  /** Running builds per client; a replaced client is closed when this drops to 0. */
  private readonly users = new Map<BuildkitClient, number>();
  private readonly retired = new Set<BuildkitClient>();
  private timer: NodeJS.Timeout | undefined;
  private closed = false;

  constructor(opts: BuilderPoolOptions) {
    if (opts.builders.length === 0) throw new Error('BuilderPool: no builders configured');
    this.builders = opts.builders.map((b) => ({
      address: b.address,
      concurrency: b.concurrency,
      healthy: undefined,
    }));
    this.redis = opts.redis;
    this.logger = opts.logger;
    this.prefix = opts.keyPrefix ?? 'kiln';
    this.leaseTtlMs = opts.leaseTtlMs ?? 30_000;
    this.healthIntervalMs = opts.healthIntervalMs ?? 5000;
    this.healthTimeoutMs = opts.healthTimeoutMs ?? 3000;
    this.affinityTtlSeconds = opts.affinityTtlSeconds ?? 7 * 24 * 3600;
    this.dial = opts.connectBuilder ?? ((address, timeoutMs) => connect(address, { timeoutMs }));
  }

  leaseKey(address: string): string {
    return builderLeaseKey(address, this.prefix);
  }

  affinityKey(projectId: string): string {
    return `${this.prefix}:affinity:${projectId}`;
  }

  get addresses(): string[] {
    return this.builders.map((b) => b.address);
  }

  /** Checks every builder once (bounded), then keeps checking in the background. */
  async start(options: { initialCheck?: boolean } = {}): Promise<void> {
    if (options.initialCheck ?? true) await this.checkAll();
    if (this.healthIntervalMs > 0 && !this.timer) {
      this.timer = setInterval(() => void this.checkAll(), this.healthIntervalMs);
      this.timer.unref();
    }
  }

  async checkAll(): Promise<void> {
    await Promise.all(this.builders.map((b) => this.check(b)));
  }

  /** One health check of `address`; true when it answered. */
  probe(address: string): Promise<boolean> {
    const b = this.state(address);
    return b ? this.check(b) : Promise.resolve(false);
  }

  private check(b: BuilderState): Promise<boolean> {
    if (b.checking) return b.checking;
    b.checking = (async () => {
      try {
        const client = await this.clientFor(b.address);
        const workers = await withTimeout(
          client.listWorkers(),
          this.healthTimeoutMs,
          `${b.address} ListWorkers`,
        );
        if (workers.length === 0) throw new Error('the daemon reports no BuildKit workers');
        if (b.healthy !== true) this.logger.info({ builder: b.address }, 'builder is healthy');
        b.healthy = true;
        b.lastError = undefined;
        this.recordPlatform(b, defaultPlatformOf(workers));
        return true;
      } catch (err) {
        this.markUnhealthy(b, err);
        return false;
      } finally {
        b.checkedAt = new Date();
        b.checking = undefined;
        this.publishHealth(b);
      }
    })();
    return b.checking;
  }

  /**
   * Publishes the outcome of a check for the API (GET /v1/builders). With a TTL of a few check
   * periods: a builder no worker checks any more shows as unknown rather than as its last state.
   * Not awaited, like recordPlatform.
   */
  private publishHealth(b: BuilderState): void {
    const health: PublishedBuilderHealth = {
      healthy: b.healthy === true,
      ...(b.lastError ? { lastError: b.lastError } : {}),
      checkedAt: (b.checkedAt ?? new Date()).toISOString(),
      ...(b.platform ? { platform: b.platform } : {}),
    };
    const ttlSeconds = Math.max(30, Math.ceil((3 * this.healthIntervalMs) / 1000));
    this.redis
      .set(builderHealthKey(b.address, this.prefix), JSON.stringify(health), 'EX', ttlSeconds)
      .catch((err: unknown) => {
        this.logger.warn({ builder: b.address, err: message(err) }, 'could not publish the builder health');
      });
  }

  /**
   * Remembers a builder's platform and publishes it, on every check (Redis may have lost it).
   * Not awaited: a slow Redis must not hold up health checks (probe() waits for them).
   */
  private recordPlatform(b: BuilderState, platform: string | undefined): void {
    if (!platform) return;
    b.platform = platform;
    this.redis.hset(builderPlatformsKey(this.prefix), b.address, platform).catch((err: unknown) => {
      this.logger.warn({ builder: b.address, err: message(err) }, 'could not publish the builder platform');
    });
  }

  /** The default platform of `address` (os/arch[/variant]); asks the daemon when no check has told it yet. */
  async platformOf(address: string): Promise<string | undefined> {
    const b = this.state(address);
    if (!b) return undefined;
    if (b.platform === undefined) await this.check(b);
    return b.platform;
  }

  /**
   * Reports that a build lost `address` (connection error): the builder counts as unhealthy
   * until its next successful check (started now), and its client is replaced.
   */
  reportFailure(address: string, err: unknown): void {
    const b = this.state(address);
    if (!b) return;
    this.markUnhealthy(b, err);
    void this.check(b);
  }

  private markUnhealthy(b: BuilderState, err: unknown): void {
    if (b.healthy !== false || b.lastError !== message(err)) {
      this.logger.warn({ builder: b.address, err: message(err) }, 'builder is unhealthy');
    }
    b.healthy = false;
    b.lastError = message(err);
    const client = b.client;
    b.client = undefined;
    if (client) this.retire(client);
  }

  /** The connected client of `address` (connecting once, shared by concurrent callers). */
  async clientFor(address: string): Promise<BuildkitClient> {
    const b = this.state(address);
    if (!b) throw new Error(`unknown builder ${address}`);
    if (b.client) return b.client;
    if (this.closed) throw new Error('the builder pool is closed');
    if (!b.connecting) {
      b.connecting = this.dial(address, this.healthTimeoutMs)
        .then((client) => {
          if (this.closed) {
            void client.close();
            throw new Error('the builder pool is closed');
          }
          b.client = client;
          return client;
        })
        .finally(() => {
          b.connecting = undefined;
        });
    }
    return b.connecting;
  }

  /** @internal */
  use(client: BuildkitClient): void {
    this.users.set(client, (this.users.get(client) ?? 0) + 1);
  }

  /** @internal */
  unuse(client: BuildkitClient): void {
    const n = (this.users.get(client) ?? 1) - 1;
    if (n > 0) {
      this.users.set(client, n);
      return;
    }
    this.users.delete(client);
    if (this.retired.delete(client)) void client.close().catch(() => {});
  }

  private retire(client: BuildkitClient): void {
    if ((this.users.get(client) ?? 0) > 0) this.retired.add(client);
    else void client.close().catch(() => {});
  }

  private state(address: string): BuilderState | undefined {
    return this.builders.find((b) => b.address === address);
  }

  /** Live leases per builder, in configuration order. */
  async loads(): Promise<number[]> {
    const pipeline = this.redis.pipeline();
    for (const b of this.builders) pipeline.eval(COUNT, 1, this.leaseKey(b.address));
    const results = (await pipeline.exec()) ?? [];
    return this.builders.map((_, i) => {
      const [err, value] = results[i] ?? [new Error('no reply'), 0];
      if (err) throw err;
      return Number(value);
    });
  }

  async status(): Promise<BuilderStatus[]> {
    const loads = await this.loads();
    return this.builders.map((b, i) => ({
      address: b.address,
      concurrency: b.concurrency,
      healthy: b.healthy,
      ...(b.lastError ? { lastError: b.lastError } : {}),
      ...(b.checkedAt ? { checkedAt: b.checkedAt } : {}),
      load: loads[i] ?? 0,
    }));
  }

  /**
   * Leases a builder for `buildId`: healthy (or not yet checked) builders only, the least
   * loaded first, the project's last builder before equally usable others, the builders in
   * `avoid` (those that just failed this build) only when nothing else is free.
   */
  async acquire(req: { buildId: string; projectId?: string; avoid?: Iterable<string> }): Promise<Lease> {
    const avoid = new Set(req.avoid ?? []);
    const usable = this.builders.filter((b) => b.healthy !== false);
    if (usable.length === 0) {
      const reasons = this.builders.map((b) => `${b.address}: ${b.lastError ?? 'unhealthy'}`).join('; ');
      throw new NoBuilderAvailableError(`no healthy builder (${reasons})`, 'unhealthy');
    }
    const [loads, affinity] = await Promise.all([
      this.loads(),
      req.projectId ? this.redis.get(this.affinityKey(req.projectId)) : Promise.resolve(null),
    ]);
    const load = (b: BuilderState) => loads[this.builders.indexOf(b)] ?? 0;
    const rank = (b: BuilderState): number[] => [
      avoid.has(b.address) ? 1 : 0,
      b.healthy === true ? 0 : 1,
      load(b) >= b.concurrency ? 1 : 0,
      // Affinity wins while the builder has room: its cache likely holds this project's layers.
      b.address === affinity ? 0 : 1,
      load(b) / b.concurrency,
      load(b),
    ];
    const compare = (a: number[], b: number[]) => {
      for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return (a[i] ?? 0) - (b[i] ?? 0);
      return 0;
    };
    // Stable sort: ties keep configuration order. Full builders are still asked (last): the
    // script lets a build take over its own lease (a job run again after its worker died).
    const ordered = usable
      .map((b) => ({ b, r: rank(b) }))
      .sort((x, y) => compare(x.r, y.r))
      .map((x) => x.b);
    for (const b of ordered) {
      const ok = await this.redis.eval(
        ACQUIRE,
        1,
        this.leaseKey(b.address),
        req.buildId,
        String(b.concurrency),
        String(this.leaseTtlMs),
      );
      if (Number(ok) === 1)
        return new Lease(this, b.address, req.buildId, Math.max(100, this.leaseTtlMs / 3));
    }
    throw new NoBuilderAvailableError(
      `every healthy builder is at capacity (${usable.map((b) => `${b.address} ${load(b)}/${b.concurrency}`).join(', ')})`,
      'capacity',
    );
  }

  /** @internal */
  async renewLease(address: string, buildId: string): Promise<void> {
    const existed = await this.redis.eval(RENEW, 1, this.leaseKey(address), buildId, String(this.leaseTtlMs));
    if (Number(existed) !== 1) {
      this.logger.warn({ builder: address, buildId }, 'lease had expired before its renewal; re-created it');
    }
  }

  /** @internal */
  async releaseLease(address: string, buildId: string): Promise<void> {
    await this.redis.zrem(this.leaseKey(address), buildId);
  }

  /** Expiry (Redis time, ms) of a build's lease on `address`, if it has one. */
  async leaseExpiry(address: string, buildId: string): Promise<number | undefined> {
    const score = await this.redis.zscore(this.leaseKey(address), buildId);
    return score === null ? undefined : Number(score);
  }

  /** Redis server time in ms (the clock leases are measured with). */
  async now(): Promise<number> {
    const [seconds, micros] = await this.redis.time();
    return Number(seconds) * 1000 + Math.floor(Number(micros) / 1000);
  }

  /** Remembers that `address` built `projectId` last. */
  async setAffinity(projectId: string, address: string): Promise<void> {
    await this.redis.set(this.affinityKey(projectId), address, 'EX', this.affinityTtlSeconds);
  }

  async close(): Promise<void> {
    this.closed = true;
    clearInterval(this.timer);
    this.timer = undefined;
    const clients = new Set<BuildkitClient>([...this.users.keys(), ...this.retired]);
    for (const b of this.builders) {
      if (b.client) clients.add(b.client);
      b.client = undefined;
    }
    this.users.clear();
    this.retired.clear();
    await Promise.all([...clients].map((c) => c.close().catch(() => {})));
  }
}
