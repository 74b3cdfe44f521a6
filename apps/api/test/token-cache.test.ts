// TokenCache against a real Redis: what it caches, and every way an entry leaves it (revocation
// here, revocation announced by another replica, a lost subscription, the TTL, a revocation
// racing a look-up).
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { after, describe, test } from 'node:test';
import { setTimeout as delay } from 'node:timers/promises';
import { createLogger, type TokenRecord } from '@kiln/core';
import { Redis } from 'ioredis';
import { testRedisUrl } from '../../../packages/core/test-support/services.js';
import { TOKEN_REVOKED_CHANNEL, TokenCache } from '../src/token-cache.js';

const logger = createLogger('token-cache-test', 'silent');
const connections: Redis[] = [];
const connect = () => {
  const r = new Redis(testRedisUrl(), { autoResubscribe: false });
  connections.push(r);
  return r;
};
after(() => {
  for (const r of connections) r.disconnect();
});

/** A cache over an in-memory table, counting the look-ups that reach it, per hash. */
async function setUp(opts: { ttlMs?: number; loadDelayMs?: number } = {}) {
  const rows = new Map<string, TokenRecord>([
    ['probe', { id: 'probe', projectId: 'p', revokedAt: null, scope: 'manage', projectDisabledAt: null }],
  ]);
  const counts = new Map<string, number>();
  const subscriber = connect();
  const cache = new TokenCache({
    load: async (hash) => {
      counts.set(hash, (counts.get(hash) ?? 0) + 1);
      const row = rows.get(hash) ?? null;
      // The row as read now, answered late: what a slow query returns.
      if (opts.loadDelayMs) await delay(opts.loadDelayMs);
      return row;
    },
    subscriber,
    publisher: connect(),
    logger,
    ...(opts.ttlMs ? { ttlMs: opts.ttlMs } : {}),
  });
  const count = (hash: string) => counts.get(hash) ?? 0;
  /** Waits until the cache stores entries again (its subscription is up). */
  const untilLive = async () => {
    for (let i = 0; i < 200; i++) {
      await cache.resolve('probe');
      const before = count('probe');
      await cache.resolve('probe');
      if (count('probe') === before) return; // the second one was served from memory
      await delay(10);
    }
    throw new Error('the cache never went live');
  };
  await untilLive();
  return {
    cache,
    rows,
    subscriber,
    untilLive,
    loads: () => [...counts.values()].reduce((a, b) => a + b, 0) - count('probe'),
  };
}

const token = (id: string): TokenRecord => ({
  id,
  projectId: 'proj',
  revokedAt: null,
  scope: 'manage',
  projectDisabledAt: null,
});

/** Gets a live token cached, then marks its row revoked, as PostgreSQL has it after a revocation. */
async function cacheThenRevokeRow(
  cache: TokenCache,
  rows: Map<string, TokenRecord>,
  hash: string,
  id: string,
) {
  rows.set(hash, token(id));
  await cache.resolve(hash);
  rows.set(hash, { ...token(id), revokedAt: new Date() });
}

describe('TokenCache', () => {
  test('a live token is read once, then served from memory', async () => {
    const { cache, rows, loads } = await setUp();
    rows.set('h1', token('t1'));
    assert.deepEqual(await cache.resolve('h1'), token('t1'));
    assert.deepEqual(await cache.resolve('h1'), token('t1'));
    assert.deepEqual(await cache.resolve('h1'), token('t1'));
    assert.equal(loads(), 1);
  });

  test('unknown and revoked tokens are never cached', async () => {
    const { cache, rows, loads } = await setUp();
    rows.set('gone', { ...token('t2'), revokedAt: new Date() });
    for (let i = 0; i < 3; i++) {
      assert.equal(await cache.resolve('nobody'), null);
      assert.ok((await cache.resolve('gone'))?.revokedAt);
    }
    assert.equal(loads(), 6);
  });

  test('revoked() here: the next look-up reads the row again', async () => {
    const { cache, rows, loads } = await setUp();
    await cacheThenRevokeRow(cache, rows, 'h3', 't3');
    await cache.revoked('t3');
    assert.ok((await cache.resolve('h3'))?.revokedAt, 'the revoked row, not the cached one');
    assert.equal(loads(), 2);
  });

  test('a revocation another replica announces evicts the token within moments', async () => {
    const { cache, rows, loads } = await setUp();
    await cacheThenRevokeRow(cache, rows, 'h4', 't4');
    const started = Date.now();
    await connect().publish(TOKEN_REVOKED_CHANNEL, 't4');
    while (!(await cache.resolve('h4'))?.revokedAt) {
      assert.ok(Date.now() - started < 2000, 'still cached 2 s after the announcement');
      await delay(5);
    }
    assert.ok(loads() >= 2);
  });

  test('while its subscription is down it caches nothing; back up, it caches again', async () => {
    const { cache, rows, subscriber, untilLive, loads } = await setUp();
    rows.set('h5', token('t5'));
    await cache.resolve('h5');
    await cache.resolve('h5');
    assert.equal(loads(), 1);
    // As when Redis goes away: while not subscribed, a revocation message could be missed.
    const closed = once(subscriber, 'close');
    subscriber.disconnect();
    await closed;
    await cache.resolve('h5');
    await cache.resolve('h5');
    assert.equal(loads(), 3, 'every look-up read the row while not subscribed');
    await subscriber.connect();
    await untilLive();
    await cache.resolve('h5');
    await cache.resolve('h5');
    assert.equal(loads(), 4, 'cached again once subscribed');
  });

  test('an entry expires after ttlMs even with no message', async () => {
    const { cache, rows, loads } = await setUp({ ttlMs: 50 });
    rows.set('h6', token('t6'));
    await cache.resolve('h6');
    await cache.resolve('h6');
    assert.equal(loads(), 1);
    await delay(70);
    await cache.resolve('h6');
    assert.equal(loads(), 2);
  });

  test('a revocation during a look-up keeps that look-up out of the cache', async () => {
    const { cache, rows, loads } = await setUp({ loadDelayMs: 50 });
    rows.set('h7', token('t7'));
    const inFlight = cache.resolve('h7'); // reads the row while it is still live
    await delay(10);
    rows.set('h7', { ...token('t7'), revokedAt: new Date() });
    await cache.revoked('t7');
    assert.equal((await inFlight)?.revokedAt, null);
    assert.ok((await cache.resolve('h7'))?.revokedAt, 'the stale read was not stored');
    assert.equal(loads(), 2);
  });
});
