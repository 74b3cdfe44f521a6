// A PostgreSQL that stops answering without closing its connections (a host gone, a failover's
// black hole), reached through a relay that freezes: calls fail as "unavailable" (retried by the
// worker, 503 from the API) instead of waiting for ever.
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { type FreezingRelay, startFreezingRelay } from '../../test-support/freezing-relay.js';
import { createTestDatabase, type TestDatabase } from '../../test-support/services.js';
import { createDatabase, type Database } from './client.js';
import { isDatabaseUnavailable } from './unavailable.js';

let testDb: TestDatabase;
let relay: FreezingRelay;
let database: Database;

before(async () => {
  testDb = await createTestDatabase();
  relay = await startFreezingRelay(testDb.url);
  database = createDatabase(relay.url, { queryTimeoutMs: 1500 });
});
after(async () => {
  await relay?.close();
  await database?.close();
  await testDb?.drop();
});

test('queries on connections PostgreSQL stopped answering fail as unavailable, plain SQL and Prisma', async () => {
  assert.equal((await database.pool.query<{ one: number }>('SELECT 1 AS one')).rows[0]?.one, 1);
  assert.equal(await database.prisma.project.count(), 0);
  relay.freeze();
  const started = Date.now();
  for (const call of [() => database.pool.query('SELECT 1'), () => database.prisma.project.count()]) {
    await assert.rejects(call(), (err) => isDatabaseUnavailable(err), 'an unavailable error');
  }
  // Bounded only to show that it ends: the plain query waits out its 1.5 s; Prisma's, on a new
  // connection, the 30 s connect timeout.
  assert.ok(Date.now() - started < 90_000, `took ${Date.now() - started} ms`);
});

test('a connection whose query timed out in a transaction is not used again once PostgreSQL answers', async () => {
  const thawed = await startFreezingRelay(testDb.url);
  const db = createDatabase(thawed.url, { queryTimeoutMs: 1000, maxConnections: 1 });
  try {
    const client = await db.pool.connect();
    await client.query('BEGIN');
    await client.query('SELECT 1');
    thawed.freeze();
    await assert.rejects(client.query('SELECT 2'), /Query read timeout/);
    // What a caller's clean-up does: roll back (queued behind the timed-out query), give it back.
    await client.query('ROLLBACK').catch(() => {});
    client.release();
    thawed.thaw();
    // Outside any transaction: now() is this statement's own time, not an earlier BEGIN's.
    const { rows } = await db.pool.query<{ fresh: boolean }>('SELECT now() = statement_timestamp() AS fresh');
    assert.equal(rows[0]?.fresh, true);
  } finally {
    await thawed.close();
    await db.close();
  }
});
