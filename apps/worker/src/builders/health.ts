/**
 * Health of the builders as this worker sees it: `listWorkers()` and `info()` every few seconds,
 * bounded by a timeout. Each outcome is published in Redis with a TTL (builderHealthKey) for the
 * API's GET /v1/builders. A healthy check also learns the builder's default platform (recorded
 * with each artifact) and publishes it for the API's result cache (builderPlatformsKey), and its
 * capabilities (version, platforms, features), kept after it goes down and published without
 * expiry (builderCapabilitiesKey) for the pool's routing and the API's check at POST. An
 * unhealthy builder's client is replaced.
 */
import { type BuildkitClient, UnsupportedError, type WorkerInfo } from '@kiln/buildkit-client';
import {
  type BuilderCapabilities,
  builderCapabilitiesKey,
  builderHealthKey,
  builderPlatformsKey,
  featuresOf,
  type Logger,
  type PublishedBuilderHealth,
} from '@kiln/core';
import type { Redis } from 'ioredis';
import type { BuilderClients } from './clients.js';
import { errorMessage } from './error-message.js';

export interface BuilderHealthOptions {
  addresses: readonly string[];
  clients: BuilderClients;
  redis: Redis;
  logger: Logger;
  keyPrefix: string;
  /** Check period; 0 turns periodic checks off. */
  intervalMs: number;
  /** Bound of one check (connect + ListWorkers). */
  timeoutMs: number;
}

export interface HealthState {
  /** undefined until the first check. */
  healthy: boolean | undefined;
  lastError?: string;
  checkedAt?: Date;
  /** Default platform, from the last successful check. */
  platform?: string;
  /** From the last successful check; kept while the builder is down. */
  capabilities?: BuilderCapabilities;
}

interface CheckedState extends HealthState {
  checking?: Promise<boolean>;
}

/**
 * The platform a daemon builds for when the build names none: the first platform of its first
 * BuildKit worker (BuildKit lists the native one first), as `os/arch[/variant]`.
 */
export function defaultPlatformOf(workers: readonly WorkerInfo[]): string | undefined {
  const p = workers[0]?.platforms[0];
  return p ? platformName(p) : undefined;
}

const platformName = (p: WorkerInfo['platforms'][number]) =>
  `${p.os}/${p.architecture}${p.variant ? `/${p.variant}` : ''}`;

/**
 * A daemon's capabilities from its ListWorkers and Info answers. `version` is null when the
 * daemon has no Control.Info (BuildKit < 0.11) and its workers report none either. dockerd's
 * embedded BuildKit runs moby's own worker (id "moby"), whose exporters and cache backends are
 * fewer than buildkitd's whatever its version.
 */
export function capabilitiesOf(workers: readonly WorkerInfo[], version: string | null): BuilderCapabilities {
  const v = version ?? workers.find((w) => w.buildkitVersion?.version)?.buildkitVersion?.version ?? null;
  const platforms = [...new Set(workers.flatMap((w) => w.platforms.map(platformName)))];
  return {
    version: v,
    platforms,
    features: featuresOf(
      v,
      workers.some((w) => w.id === 'moby'),
    ),
  };
}

/** The daemon's version from Control.Info; null when it has no such RPC. */
async function versionOf(client: BuildkitClient): Promise<string | null> {
  try {
    return (await client.info()).buildkitVersion.version || null;
  } catch (err) {
    if (err instanceof UnsupportedError) return null;
    throw err;
  }
}

function withTimeout<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what} did not answer within ${ms} ms`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

/** How long a member that left is still known to the builds it ran (at most a build's life). */
const DEPARTED_KEPT_MS = 24 * 3600_000;

export class BuilderHealth {
  private readonly states: Map<string, CheckedState>;
  /**
   * Members that left the pool, kept for the builds they still run: a draining pod leaves DNS at
   * once, and a build that fails on it must still learn whether the builder answers (a real
   * Dockerfile error is not a lost builder) and what it is. Not checked nor published.
   */
  private readonly departed = new Map<string, { state: CheckedState; at: number }>();
  private timer: NodeJS.Timeout | undefined;

  constructor(private readonly o: BuilderHealthOptions) {
    this.states = new Map(o.addresses.map((address) => [address, { healthy: undefined }]));
  }

  /** Checks every builder once (bounded) unless told not to, then keeps checking in the background. */
  async start(options: { initialCheck?: boolean } = {}): Promise<void> {
    if (options.initialCheck ?? true) await this.checkAll();
    if (this.o.intervalMs > 0 && !this.timer) {
      this.timer = setInterval(() => void this.checkAll(), this.o.intervalMs);
      this.timer.unref();
    }
  }

  stop(): void {
    clearInterval(this.timer);
    this.timer = undefined;
  }

  /** Starts watching a builder that joined the pool (a discovered member); checks it now. */
  add(address: string): void {
    if (this.states.has(address)) return;
    this.departed.delete(address);
    this.states.set(address, { healthy: undefined });
    void this.check(address);
  }

  /** Stops watching a builder that left the pool; its published health expires by itself. */
  /**
   * Stops checking `address` and withdraws what it published, so that members of a discovered
   * name that come and go (pod IPs) leave nothing behind in Redis. Best effort: another worker
   * that still has the member publishes it again at its next check.
   */
  remove(address: string): void {
    const state = this.states.get(address);
    this.states.delete(address);
    const now = Date.now();
    for (const [a, d] of this.departed) if (now - d.at > DEPARTED_KEPT_MS) this.departed.delete(a);
    if (state) this.departed.set(address, { state, at: now });
    this.o.redis
      .multi()
      .hdel(builderCapabilitiesKey(this.o.keyPrefix), address)
      .hdel(builderPlatformsKey(this.o.keyPrefix), address)
      .exec()
      .catch((err: unknown) => {
        this.o.logger.warn({ builder: address, err: errorMessage(err) }, 'could not withdraw the builder');
      });
  }

  async checkAll(): Promise<void> {
    await Promise.all([...this.states.keys()].map((address) => this.check(address)));
  }

  /** The last known health of `address`; undefined for an address not configured. */
  of(address: string): Readonly<HealthState> | undefined {
    return this.states.get(address);
  }

  /** One check of `address` (joining one under way); true when it answered. */
  check(address: string): Promise<boolean> {
    const s = this.stateOf(address);
    if (!s) return Promise.resolve(false);
    if (s.checking) return s.checking;
    s.checking = (async () => {
      try {
        const client = await this.o.clients.clientFor(address);
        const [workers, version] = await withTimeout(
          Promise.all([client.listWorkers(), versionOf(client)]),
          this.o.timeoutMs,
          `${address} ListWorkers/Info`,
        );
        if (workers.length === 0) throw new Error('the daemon reports no BuildKit workers');
        this.recordCapabilities(address, s, capabilitiesOf(workers, version));
        if (s.healthy !== true) this.o.logger.info({ builder: address }, 'builder is healthy');
        s.healthy = true;
        s.lastError = undefined;
        this.recordPlatform(address, s, defaultPlatformOf(workers));
        return true;
      } catch (err) {
        this.markUnhealthy(address, s, err);
        return false;
      } finally {
        s.checkedAt = new Date();
        s.checking = undefined;
        if (this.states.get(address) === s) this.publish(address, s);
      }
    })();
    return s.checking;
  }

  /**
   * What `address` can do, from its last successful check; asks it now only if it was never
   * checked (a builder that is down is not waited for on every lease: its next check tells).
   */
  async capabilitiesOf(address: string): Promise<BuilderCapabilities | undefined> {
    const s = this.stateOf(address);
    if (!s) return undefined;
    if (s.capabilities === undefined && s.healthy === undefined) await this.check(address);
    return s.capabilities;
  }

  /** The default platform of `address` (os/arch[/variant]); asks the daemon when no check has told it yet. */
  async platformOf(address: string): Promise<string | undefined> {
    const s = this.stateOf(address);
    if (!s) return undefined;
    if (s.platform === undefined) await this.check(address);
    return s.platform;
  }

  /**
   * A build lost `address`: it counts as unhealthy until its next successful check (started
   * now), and its client is replaced.
   */
  reportFailure(address: string, err: unknown): void {
    const s = this.stateOf(address);
    if (!s) return;
    this.markUnhealthy(address, s, err);
    void this.check(address);
  }

  /** A builder in the pool, or one that left it recently (`departed`). */
  private stateOf(address: string): CheckedState | undefined {
    return this.states.get(address) ?? this.departed.get(address)?.state;
  }

  private markUnhealthy(address: string, s: CheckedState, err: unknown): void {
    const message = errorMessage(err);
    if (s.healthy !== false || s.lastError !== message) {
      this.o.logger.warn({ builder: address, err: message }, 'builder is unhealthy');
    }
    s.healthy = false;
    s.lastError = message;
    this.o.clients.replace(address);
  }

  /**
   * Publishes the outcome of a check for the API (GET /v1/builders). With a TTL of a few check
   * periods: a builder no worker checks any more shows as unknown rather than as its last state.
   * Not awaited, like recordPlatform.
   */
  private publish(address: string, s: HealthState): void {
    const health: PublishedBuilderHealth = {
      healthy: s.healthy === true,
      ...(s.lastError ? { lastError: s.lastError } : {}),
      checkedAt: (s.checkedAt ?? new Date()).toISOString(),
      ...(s.platform ? { platform: s.platform } : {}),
    };
    const ttlSeconds = Math.max(30, Math.ceil((3 * this.o.intervalMs) / 1000));
    this.o.redis
      .set(builderHealthKey(address, this.o.keyPrefix), JSON.stringify(health), 'EX', ttlSeconds)
      .catch((err: unknown) => {
        this.o.logger.warn(
          { builder: address, err: errorMessage(err) },
          'could not publish the builder health',
        );
      });
  }

  /** Remembers a builder's capabilities and publishes them, on every check; not awaited. */
  private recordCapabilities(address: string, s: HealthState, caps: BuilderCapabilities): void {
    s.capabilities = caps;
    // A check that ends after remove() must not publish the builder again.
    if (this.states.get(address) !== s) return;
    this.o.redis
      .hset(builderCapabilitiesKey(this.o.keyPrefix), address, JSON.stringify(caps))
      .catch((err: unknown) => {
        this.o.logger.warn(
          { builder: address, err: errorMessage(err) },
          'could not publish the builder capabilities',
        );
      });
  }

  /**
   * Remembers a builder's platform and publishes it, on every check (Redis may have lost it).
   * Not awaited: a slow Redis must not hold up health checks (probes wait for them).
   */
  private recordPlatform(address: string, s: HealthState, platform: string | undefined): void {
    if (!platform) return;
    s.platform = platform;
    if (this.states.get(address) !== s) return;
    this.o.redis.hset(builderPlatformsKey(this.o.keyPrefix), address, platform).catch((err: unknown) => {
      this.o.logger.warn(
        { builder: address, err: errorMessage(err) },
        'could not publish the builder platform',
      );
    });
  }
}
