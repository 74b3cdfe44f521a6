/**
 * The pool of BuildKit daemons a worker builds on, composing the builders' clients
 * (clients.ts), their health (health.ts), the capacity leases shared with every worker
 * process (lease-store.ts) and project affinity (affinity.ts). Choice: the least-loaded
 * healthy builder, the project's last builder first, builders that just failed this build last.
 */
import { randomUUID } from 'node:crypto';
import { type BuildkitClient, connect, type TlsOptions } from '@kiln/buildkit-client';
import {
  AppError,
  type BuilderCapabilities,
  type BuilderIsolation,
  type Logger,
  type SpecRequirements,
  unmetRequirements,
} from '@kiln/core';
import type { Redis } from 'ioredis';
import { ProjectAffinity } from './affinity.js';
import { BuilderClients, type DialBuilder } from './clients.js';
import { BuilderDiscovery, type BuilderEntry, isDiscovered } from './discovery.js';
import { BuilderHealth } from './health.js';
import { Lease } from './lease.js';
import { LeaseStore } from './lease-store.js';

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

/**
 * Thrown by `acquire()` when no configured builder can do what the build asks (every builder's
 * capabilities are known and none satisfies): waiting would not help.
 */
export class NoCapableBuilderError extends AppError {
  constructor(message: string) {
    super('no_capable_builder', message);
    this.name = 'NoCapableBuilderError';
  }
}

export interface BuilderPoolOptions {
  /** Builders; a `dns+tcp://` one stands for the members its name resolves to (discovery.ts). */
  builders: ReadonlyArray<{ address: string; concurrency: number; tls?: TlsOptions }>;
  /** DNS servers for `dns+tcp://` names (`ip[:port]`); default the system's. */
  dnsServers?: readonly string[];
  /** How often `dns+tcp://` names are resolved again; default 10 s. */
  discoveryIntervalMs?: number;
  redis: Redis;
  logger: Logger;
  /** Namespace of the lease and affinity keys; default `kiln`. */
  keyPrefix?: string;
  /** A lease not renewed for this long is gone; default 30 s. Renewed every third of it. */
  leaseTtlMs?: number;
  /** `project`: a builder serves one project's builds at a time (lease-store.ts); default `shared`. */
  isolation?: BuilderIsolation;
  /** Health check period; default 5 s; 0 turns periodic checks off. */
  healthIntervalMs?: number;
  /** Bound of one health check (connect + ListWorkers); default 3 s. */
  healthTimeoutMs?: number;
  /** How long the project → builder affinity is remembered; default 7 days. */
  affinityTtlSeconds?: number;
  /**
   * A PING this often on a builder connection while builds use it, unanswered for min(20 s,
   * this), drops it (KeepaliveOptions of @kiln/buildkit-client); default 0, none.
   */
  keepaliveSeconds?: number;
  /** Dials a builder; default `connect(address, { timeoutMs, tls, keepalive })` of @kiln/buildkit-client. */
  connectBuilder?: DialBuilder;
  /**
   * Called with the build first in a builder's line when a slot of that builder frees. That
   * build was handed back to wait (1–2 s); the slot is kept for it, so it should run again now
   * rather than leave the slot idle until its delay ends.
   */
  wakeWaiter?: (buildId: string) => Promise<void>;
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
  /** From the last successful check. */
  capabilities?: BuilderCapabilities;
}

interface Builder {
  address: string;
  concurrency: number;
}

const compareRanks = (a: number[], b: number[]): number => {
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return (a[i] ?? 0) - (b[i] ?? 0);
  return 0;
};

export class BuilderPool {
  readonly logger: Logger;
  readonly leaseTtlMs: number;
  /** The builders that may get new builds: the listed ones and the members discovered now. */
  private builders: Builder[];
  /** The current members of each `dns+tcp://` name. */
  private readonly members = new Map<string, Set<string>>();
  /** Addresses listed in the configuration, which never leave. */
  private readonly listed: Set<string>;
  /** The `dns+tcp://` names. */
  private readonly names: string[];
  private readonly clients: BuilderClients;
  private readonly health: BuilderHealth;
  private readonly discovery: BuilderDiscovery;
  private readonly leases: LeaseStore;
  private readonly isolated: boolean;
  private readonly affinity: ProjectAffinity;
  private readonly wakeWaiter: ((buildId: string) => Promise<void>) | undefined;

  constructor(opts: BuilderPoolOptions) {
    if (opts.builders.length === 0) throw new Error('BuilderPool: no builders configured');
    const listed = opts.builders.filter((b) => !isDiscovered(b.address));
    this.builders = listed.map((b) => ({ address: b.address, concurrency: b.concurrency }));
    this.listed = new Set(listed.map((b) => b.address));
    this.names = opts.builders.filter((b) => isDiscovered(b.address)).map((b) => b.address);
    this.logger = opts.logger;
    this.leaseTtlMs = opts.leaseTtlMs ?? 30_000;
    const keyPrefix = opts.keyPrefix ?? 'kiln';
    const healthTimeoutMs = opts.healthTimeoutMs ?? 3000;
    const keepaliveMs = (opts.keepaliveSeconds ?? 0) * 1000;
    const keepalive =
      keepaliveMs > 0 ? { intervalMs: keepaliveMs, timeoutMs: Math.min(20_000, keepaliveMs) } : undefined;
    this.clients = new BuilderClients(
      listed,
      opts.connectBuilder ??
        ((address, timeoutMs, tls) =>
          connect(address, {
            timeoutMs,
            ...(tls ? { tls } : {}),
            ...(keepalive ? { keepalive } : {}),
          })),
      healthTimeoutMs,
    );
    this.health = new BuilderHealth({
      addresses: this.addresses,
      clients: this.clients,
      redis: opts.redis,
      logger: opts.logger,
      keyPrefix,
      intervalMs: opts.healthIntervalMs ?? 5000,
      timeoutMs: healthTimeoutMs,
    });
    this.discovery = new BuilderDiscovery({
      services: opts.builders.filter((b) => isDiscovered(b.address)),
      dnsServers: opts.dnsServers ?? [],
      intervalMs: opts.discoveryIntervalMs ?? 10_000,
      redis: opts.redis,
      keyPrefix,
      logger: opts.logger,
      onMembers: (service, members) => this.setMembers(service, members),
    });
    this.leases = new LeaseStore(opts.redis, keyPrefix, this.leaseTtlMs, opts.isolation === 'project');
    this.isolated = opts.isolation === 'project';
    this.affinity = new ProjectAffinity(opts.redis, keyPrefix, opts.affinityTtlSeconds ?? 7 * 24 * 3600);
    this.wakeWaiter = opts.wakeWaiter;
  }

  leaseKey(address: string): string {
    return this.leases.key(address);
  }

  affinityKey(projectId: string): string {
    return this.affinity.key(projectId);
  }

  get addresses(): string[] {
    return this.builders.map((b) => b.address);
  }

  /** Resolves `dns+tcp://` names and checks every builder once (bounded), then keeps both up in the background. */
  async start(options: { initialCheck?: boolean } = {}): Promise<void> {
    await this.discovery.start();
    await this.health.start(options);
  }

  /** One round of DNS discovery now (tests; the pool runs them every interval). */
  discover(): Promise<void> {
    return this.discovery.resolveAll();
  }

  /**
   * The members `service` resolves to now. New ones join (checked at once); vanished ones get no
   * new builds, while builds they run keep their lease and client and finish or fail over as
   * on any builder.
   */
  private setMembers(service: string, members: readonly BuilderEntry[]): void {
    const before = this.members.get(service) ?? new Set<string>();
    const now = new Set(members.map((m) => m.address));
    const joined = members.filter((m) => !before.has(m.address));
    const left = [...before].filter((a) => !now.has(a));
    if (joined.length === 0 && left.length === 0) return;
    this.members.set(service, now);
    const stillNamed = (a: string) =>
      this.listed.has(a) || [...this.members.values()].some((set) => set.has(a));
    for (const address of left) {
      if (stillNamed(address)) continue;
      this.builders = this.builders.filter((b) => b.address !== address);
      this.health.remove(address);
      this.clients.replace(address);
    }
    for (const m of joined) {
      if (this.builders.some((b) => b.address === m.address)) continue;
      this.builders.push({ address: m.address, concurrency: m.concurrency });
      this.clients.add(m.address, m.tls);
      this.health.add(m.address);
    }
    this.logger.info(
      { builder: service, members: [...now], joined: joined.map((m) => m.address), left },
      'builder members changed',
    );
  }

  checkAll(): Promise<void> {
    return this.health.checkAll();
  }

  /** One health check of `address`; true when it answered. */
  probe(address: string): Promise<boolean> {
    return this.health.check(address);
  }

  /** What `address` can do, as its health checks learnt it (undefined: not reached yet). */
  capabilitiesOf(address: string): Promise<BuilderCapabilities | undefined> {
    return this.health.capabilitiesOf(address);
  }

  /** The default platform of `address` (os/arch[/variant]); asks the daemon when no check has told it yet. */
  platformOf(address: string): Promise<string | undefined> {
    return this.health.platformOf(address);
  }

  /**
   * Reports that a build lost `address` (connection error): the builder counts as unhealthy
   * until its next successful check (started now), and its client is replaced.
   */
  reportFailure(address: string, err: unknown): void {
    this.health.reportFailure(address, err);
  }

  /** The connected client of `address` (connecting once, shared by concurrent callers). */
  clientFor(address: string): Promise<BuildkitClient> {
    return this.clients.clientFor(address);
  }

  /** Live leases per builder, in configuration order. */
  loads(): Promise<number[]> {
    return this.leases.counts(this.addresses);
  }

  async status(): Promise<BuilderStatus[]> {
    const builders = this.builders;
    const loads = await this.leases.counts(builders.map((b) => b.address));
    return builders.map((b, i) => {
      const h = this.health.of(b.address);
      return {
        address: b.address,
        concurrency: b.concurrency,
        healthy: h?.healthy,
        ...(h?.lastError ? { lastError: h.lastError } : {}),
        ...(h?.checkedAt ? { checkedAt: h.checkedAt } : {}),
        load: loads[i] ?? 0,
        ...(h?.capabilities ? { capabilities: h.capabilities } : {}),
      };
    });
  }

  /**
   * Leases a builder for `buildId`: healthy (or not yet checked) builders only, the least
   * loaded first, the project's last builder before equally usable others, the builders in
   * `avoid` (those that just failed this build) only when nothing else is free. Within the
   * project's running-builds quota (`projectLimit`, 0: none), and after every better-ranked build
   * already waiting for a slot (lease-store.ts: fairness). Only builders that satisfy
   * `requires` (builder-capabilities.ts in core): NoCapableBuilderError when every builder is
   * known not to, NoBuilderAvailableError('unhealthy') when the capable ones are down.
   */
  async acquire(req: {
    buildId: string;
    projectId?: string;
    avoid?: Iterable<string>;
    projectLimit?: number;
    rank?: number;
    requires?: SpecRequirements;
  }): Promise<Lease> {
    const avoid = new Set(req.avoid ?? []);
    const healthy = (b: Builder) => this.health.of(b.address)?.healthy;
    const capable = await this.capableBuilders(req.requires);
    const usable = capable.filter((b) => healthy(b) !== false);
    if (this.builders.length === 0) {
      throw new NoBuilderAvailableError(
        `no builder: ${this.names.join(', ')} resolved to no address`,
        'unhealthy',
      );
    }
    if (usable.length === 0) {
      const reasons = capable
        .map((b) => `${b.address}: ${this.health.of(b.address)?.lastError ?? 'unhealthy'}`)
        .join('; ');
      throw new NoBuilderAvailableError(
        `no healthy builder${capable.length < this.builders.length ? ' that can serve this build' : ''} (${reasons})`,
        'unhealthy',
      );
    }
    const [loads, affinity] = await Promise.all([
      this.leases.counts(usable.map((b) => b.address)),
      req.projectId ? this.affinity.get(req.projectId) : Promise.resolve(null),
    ]);
    // By position in `usable`: discovery may change the pool while this waits.
    const load = (b: Builder) => loads[usable.indexOf(b)] ?? 0;
    const rank = (b: Builder): number[] => [
      avoid.has(b.address) ? 1 : 0,
      healthy(b) === true ? 0 : 1,
      load(b) >= b.concurrency ? 1 : 0,
      // Affinity wins while the builder has room: its cache likely holds this project's layers.
      b.address === affinity ? 0 : 1,
      load(b) / b.concurrency,
      load(b),
    ];
    // Stable sort: ties keep configuration order. Full builders are still asked (last): the
    // script lets a build take over its own lease (a job run again after its worker died).
    const ordered = usable
      .map((b) => ({ b, r: rank(b) }))
      .sort((x, y) => compareRanks(x.r, y.r))
      .map((x) => x.b);
    const claim = {
      projectId: req.projectId ?? '',
      projectLimit: req.projectLimit ?? 0,
      rank: req.rank ?? 1,
    };
    const token = randomUUID();
    let atQuota = false;
    for (const b of ordered) {
      const outcome = await this.leases.tryAcquire(
        b.address,
        req.buildId,
        token,
        b.concurrency,
        claim,
        ordered.map((o) => o.address),
      );
      // A builder further on may still be one this build holds a lease on (a job run again after
      // its worker died), which it takes over without counting again.
      if (outcome === 'project_quota') {
        atQuota = true;
        continue;
      }
      // Draining: its pod is stopping (POST /v1/builders/drain); the next builder may take it.
      if (outcome === 'draining') continue;
      if (outcome === 'leased') {
        return new Lease(
          {
            store: this.leases,
            clients: this.clients,
            logger: this.logger,
            ...(this.wakeWaiter ? { wakeWaiter: this.wakeWaiter } : {}),
          },
          b.address,
          claim.projectId,
          req.buildId,
          token,
        );
      }
    }
    if (atQuota) {
      throw new NoBuilderAvailableError(
        `the project already runs ${claim.projectLimit} builds, its limit (running builds)`,
        'capacity',
      );
    }
    throw new NoBuilderAvailableError(
      `every healthy builder is at capacity${this.isolated ? ", serving another project's builds" : ''} or draining (${usable.map((b) => `${b.address} ${load(b)}/${b.concurrency}`).join(', ')})`,
      'capacity',
    );
  }

  /**
   * The builders that may serve `requires`: those whose capabilities satisfy it, and those not
   * known yet (never answered a check: down, so never leased, but they may be capable once up).
   * Throws NoCapableBuilderError when that leaves none.
   */
  private async capableBuilders(requires: SpecRequirements | undefined): Promise<Builder[]> {
    const builders = this.builders;
    // No members discovered (yet): nothing is known to be incapable, the build waits.
    if (
      !requires ||
      (requires.platforms.length === 0 && requires.features.length === 0) ||
      builders.length === 0
    ) {
      return builders;
    }
    const caps = await Promise.all(builders.map((b) => this.health.capabilitiesOf(b.address)));
    const unmet = caps.map((c) => (c ? unmetRequirements(c, requires) : []));
    const capable = builders.filter((_, i) => unmet[i]?.length === 0);
    if (capable.length > 0) return capable;
    const reasons = builders.map((b, i) => `${b.address} lacks ${unmet[i]?.join(', ')}`).join('; ');
    // A `dns+tcp://` name with no members now (a rolling restart) stands for builders that may
    // serve it once back, as the API judged when it accepted the build: wait, do not fail it.
    const empty = this.names.filter((n) => (this.members.get(n)?.size ?? 0) === 0);
    if (empty.length > 0) {
      throw new NoBuilderAvailableError(
        `no builder present can serve this build (${reasons}); ${empty.join(', ')} resolved to no address`,
        'unhealthy',
      );
    }
    throw new NoCapableBuilderError(`no builder can serve this build: ${reasons}`);
  }

  /** Expiry (Redis time, ms) of a build's lease on `address`, if it has one. */
  leaseExpiry(address: string, buildId: string): Promise<number | undefined> {
    return this.leases.expiry(address, buildId);
  }

  /** Redis server time in ms (the clock leases are measured with). */
  now(): Promise<number> {
    return this.leases.now();
  }

  /** Remembers that `address` built `projectId` last. */
  setAffinity(projectId: string, address: string): Promise<void> {
    return this.affinity.set(projectId, address);
  }

  async close(): Promise<void> {
    this.discovery.stop();
    this.health.stop();
    await this.clients.close();
  }
}
