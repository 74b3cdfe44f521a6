/**
 * Builder capacity shared by every worker process: per builder a Redis ZSET of buildId → expiry
 * (Redis server time, ms), and per project one of buildId@builder → expiry. Lua scripts drop
 * expired leases and check the counts against the builder's concurrency and the project's
 * running-builds quota atomically, so two processes never both take the last slot. A worker that dies leaves leases that expire
 * by themselves.
 *
 * Fairness: a build that finds no room on a builder joins that builder's line (a ZSET of buildId
 * → rank, its place among its project's queued builds; see buildJobOptions). A freed slot goes to
 * the best-ranked build in that builder's line: one that ranks worse stands aside, even if it
 * asked first. A build that stops asking (its worker died, it was canceled) leaves the line after
 * WAITER_STALE_MS. So while project A holds hundreds of builds that keep retrying, project B's
 * first build takes the next free slot. Lines are per builder because builds may only use some
 * builders (capabilities): a build waiting for buildkitd must not hold back one that dockerd could
 * run now. A build that takes a slot leaves the lines of every builder it was waiting for.
 * Releasing a lease names the first build in the builder's line, so that the caller can wake it
 * (it waits out a hand-back delay meanwhile, and the slot is kept for it). A draining builder
 * (builderDrainingKey) takes no new lease.
 *
 * Tenants (KILN_BUILDER_ISOLATION=project): a builder serves one project's builds at a time. A
 * builder's RUN steps may see each other (rootless buildkitd shares its process namespace with
 * them), so another project's build waits, in the builder's line, until the last lease of the
 * project there ends. Meanwhile the project's next builds stand aside for it when they rank no
 * better (ties go to the older build id), so the builder drains: no project keeps it for ever.
 *
 * Holders: a build may run twice at once for a while (a stalled job run again while its first run
 * still ends), and both runs name the same buildId. Each run takes its lease with a token of its
 * own, kept in a key beside the ZSET (expiring with the lease); the run that took the lease last
 * holds it, and only the holder renews or releases it. A release leaves a tombstone for a TTL, so
 * that the earlier run, renewing every third of it, learns it lost the lease instead of
 * re-creating it. Without holders, the superseded run's late release freed the slot the new run
 * was using, and its renewals kept the lease alive after the new run had released it. The
 * database decides which run holds the build (its attempt): a renewal may reclaim the lease for
 * the run that does (Lease.heldFor).
 */
import { builderDrainingKey, builderLeaseKey, projectLeaseKey } from '@kiln/core';
import type { Redis } from 'ioredis';

// Redis server time in ms: every worker process agrees on it whatever its own clock says.
const NOW = `local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)`;

/** The holder a release leaves for a TTL (a tombstone): no run's token. */
const RELEASED = 'released';

/** A build in line that has not asked again for this long has given up (hand-backs retry within ~2 s). */
const WAITER_STALE_MS = 5000;

/**
 * KEYS builder leases, project leases, the build's holder on this builder, the builder's
 * draining flag, the builder's tenant, this builder's line (buildId → rank) and line seen
 * (buildId → ms), then the lines and line-seen sets of the build's other builders (left on take);
 * ARGV buildId, concurrency, ttlMs, project limit (0: none), rank, staleMs, token, project member,
 * tenant ('' when builders are shared) → 1 leased (or taken over from an earlier run of the same
 * build), 0 no room (now in line), -1 the project is at its quota, -2 the builder is draining.
 * The flag is read here, not before: a drain sets it, then counts leases, so every lease is
 * either counted or refused. A builder whose leases are another tenant's has no room for this
 * one until they end; its tenant key lives as long as its newest lease.
 */
const ACQUIRE = `${NOW}
local id, ttl = ARGV[1], tonumber(ARGV[3])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
local function take()
  redis.call('ZADD', KEYS[1], now + ttl, id)
  redis.call('ZADD', KEYS[2], now + ttl, ARGV[8])
  redis.call('SET', KEYS[3], ARGV[7], 'PX', ttl)
  if ARGV[9] ~= '' then
    -- Not from a project whose build takes its own lease back beside another's builds.
    local tenant = redis.call('GET', KEYS[5])
    if not tenant or tenant == ARGV[9] or redis.call('ZCARD', KEYS[1]) == 1 then
      redis.call('SET', KEYS[5], ARGV[9], 'PX', ttl)
    end
  end
  for i = 6, #KEYS do redis.call('ZREM', KEYS[i], id) end
  return 1
end
if redis.call('ZSCORE', KEYS[1], id) then return take() end
if redis.call('EXISTS', KEYS[4]) == 1 then return -2 end
local limit = tonumber(ARGV[4])
if limit > 0 and redis.call('ZCARD', KEYS[2]) >= limit then
  return -1
end
for _, w in ipairs(redis.call('ZRANGEBYSCORE', KEYS[7], '-inf', now - tonumber(ARGV[6]))) do
  redis.call('ZREM', KEYS[6], w)
  redis.call('ZREM', KEYS[7], w)
end
local rank = tonumber(ARGV[5])
-- Shared builders: only a better-ranked build is ahead. One project per builder: an equal-ranked
-- one too (the oldest id first), or a project whose builds overlap would keep the builder, every
-- one of its builds being its first queued.
local upTo = ARGV[9] == '' and ('(' .. rank) or rank
local ahead = redis.call('ZRANGEBYSCORE', KEYS[6], '-inf', upTo, 'LIMIT', 0, 1)
local held = redis.call('ZCARD', KEYS[1])
local ours = ARGV[9] == '' or held == 0 or redis.call('GET', KEYS[5]) == ARGV[9]
if held < tonumber(ARGV[2]) and ours and (ahead[1] == nil or ahead[1] == id) then
  return take()
end
redis.call('ZADD', KEYS[6], rank, id)
redis.call('ZADD', KEYS[7], now, id)
return 0`;

/**
 * KEYS builder leases, project leases, the build's holder on this builder, the builder's tenant;
 * ARGV buildId, ttlMs, token, project member, reclaim ('1': also when another run released it),
 * tenant ('' when builders are shared) → 1 renewed, 0 re-created (it had expired, and no other
 * run took it meanwhile), -1 another run of the build holds it, or released it (without
 * reclaim). An expired lease is re-created whatever the builder's load: the build is still
 * running there, and the count should say so. The tenant key is extended with it, unless another
 * tenant took the builder meanwhile (its lease had expired): that one keeps it.
 */
const RENEW = `${NOW}
local holder = redis.call('GET', KEYS[3])
if holder and holder ~= ARGV[3] and not (ARGV[5] == '1' and holder == '${RELEASED}') then return -1 end
local ttl = tonumber(ARGV[2])
local existed = redis.call('ZSCORE', KEYS[1], ARGV[1])
redis.call('ZADD', KEYS[1], now + ttl, ARGV[1])
redis.call('ZADD', KEYS[2], now + ttl, ARGV[4])
redis.call('SET', KEYS[3], ARGV[3], 'PX', ttl)
if ARGV[6] ~= '' then
  local tenant = redis.call('GET', KEYS[4])
  if not tenant or tenant == ARGV[6] then redis.call('SET', KEYS[4], ARGV[6], 'PX', ttl) end
end
if existed and tonumber(existed) > now then return 1 end
return 0`;

/**
 * KEYS builder leases, project leases, the build's holder on this builder, this builder's line;
 * ARGV buildId, token, ttlMs, project member → the first build in line (false when nothing was
 * freed). Only the holder frees the slot; a lease whose holder key is gone (evicted) has none, and
 * is freed too.
 */
const RELEASE = `local holder = redis.call('GET', KEYS[3])
if holder and holder ~= ARGV[2] then return false end
redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('ZREM', KEYS[2], ARGV[4])
redis.call('SET', KEYS[3], '${RELEASED}', 'PX', tonumber(ARGV[3]))
return redis.call('ZRANGE', KEYS[4], 0, 0)[1]`;

/**
 * A run's entry in its project's leases: the build on one builder. A build run again on another
 * builder while its first run still ends holds two slots, and counts twice; were both entries the
 * build id, either run's release would drop the other's from the count.
 */
function projectMember(buildId: string, address: string): string {
  return `${buildId}@${address}`;
}

export type RenewOutcome = 'renewed' | 're-created' | 'superseded';

const RENEW_OUTCOMES: Record<number, RenewOutcome> = {
  1: 'renewed',
  0: 're-created',
  [-1]: 'superseded',
};

/** What a build asks for beside a slot: its project's running-builds quota, and its place in line. */
export interface LeaseClaim {
  projectId: string;
  /** Most builds of the project holding a slot at once; 0: no limit. */
  projectLimit: number;
  /** Its place among its project's queued builds (1 for the first); lower goes first. */
  rank: number;
}

export type AcquireOutcome = 'leased' | 'full' | 'project_quota' | 'draining';

const OUTCOMES: Record<number, AcquireOutcome> = {
  1: 'leased',
  0: 'full',
  [-1]: 'project_quota',
  [-2]: 'draining',
};

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
    /** A builder serves one project's builds at a time (KILN_BUILDER_ISOLATION=project). */
    private readonly perProject = false,
  ) {}

  private tenantKey(address: string): string {
    return `${this.prefix}:builder-tenant:${address}`;
  }

  private tenantOf(projectId: string): string {
    return this.perProject ? projectId : '';
  }

  key(address: string): string {
    return builderLeaseKey(address, this.prefix);
  }

  projectKey(projectId: string): string {
    return projectLeaseKey(projectId, this.prefix);
  }

  private lineKeys(address: string): [string, string] {
    return [`${this.prefix}:slot-line:${address}`, `${this.prefix}:slot-line-seen:${address}`];
  }

  private holderKey(address: string, buildId: string): string {
    return `${this.prefix}:lease-holder:${address}:${buildId}`;
  }

  /**
   * Leases `address` for `buildId` if it has room, the project is under its quota and no better
   * ranked build is in its line; or if the build already holds the lease (an earlier run of it:
   * this run, `token`, holds it from now on). `alsoWaitsFor`: the build's other builders, whose
   * lines it leaves when it gets this one.
   */
  async tryAcquire(
    address: string,
    buildId: string,
    token: string,
    concurrency: number,
    claim: LeaseClaim,
    alsoWaitsFor: readonly string[] = [],
  ): Promise<AcquireOutcome> {
    const others = alsoWaitsFor.filter((a) => a !== address).flatMap((a) => this.lineKeys(a));
    const result = await this.redis.eval(
      ACQUIRE,
      7 + others.length,
      this.key(address),
      this.projectKey(claim.projectId),
      this.holderKey(address, buildId),
      builderDrainingKey(address, this.prefix),
      this.tenantKey(address),
      ...this.lineKeys(address),
      ...others,
      buildId,
      String(concurrency),
      String(this.ttlMs),
      String(claim.projectLimit),
      String(claim.rank),
      String(WAITER_STALE_MS),
      token,
      projectMember(buildId, address),
      this.tenantOf(claim.projectId),
    );
    return OUTCOMES[Number(result)] ?? 'full';
  }

  /**
   * Extends the lease `token` holds, or re-creates it when it had expired. `reclaim`: also when
   * another run of the build released it (not while one holds it), for `token` from now on.
   */
  async renew(
    address: string,
    projectId: string,
    buildId: string,
    token: string,
    { reclaim = false } = {},
  ): Promise<RenewOutcome> {
    const result = await this.redis.eval(
      RENEW,
      4,
      this.key(address),
      this.projectKey(projectId),
      this.holderKey(address, buildId),
      this.tenantKey(address),
      buildId,
      String(this.ttlMs),
      token,
      projectMember(buildId, address),
      reclaim ? '1' : '0',
      this.tenantOf(projectId),
    );
    return RENEW_OUTCOMES[Number(result)] ?? 'superseded';
  }

  /**
   * Ends the lease if `token` holds it; resolves to the best-ranked build in this builder's line,
   * if any.
   */
  async release(
    address: string,
    projectId: string,
    buildId: string,
    token: string,
  ): Promise<string | undefined> {
    const first = await this.redis.eval(
      RELEASE,
      4,
      this.key(address),
      this.projectKey(projectId),
      this.holderKey(address, buildId),
      this.lineKeys(address)[0],
      buildId,
      token,
      String(this.ttlMs),
      projectMember(buildId, address),
    );
    return typeof first === 'string' ? first : undefined;
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
