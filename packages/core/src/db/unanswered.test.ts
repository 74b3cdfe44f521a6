// A PostgreSQL that stops answering without closing its connections (a host gone, a failover's
// black hole): reached through a TCP relay that, once frozen, passes nothing on either way.
// Calls fail as "unavailable" (retried by the worker, 503 from the API) instead of waiting for ever.
import assert from 'node:assert/strict';
import net from 'node:net';
import { after, before, test } from 'node:test';
import { createTestDatabase, type TestDatabase } from '../../test-support/services.js';
import { createDatabase, type Database } from './client.js';
import { isDatabaseUnavailable } from './unavailable.js';

let testDb: TestDatabase;
let relay: net.Server;
let frozen = false;
const sockets = new Set<net.Socket>();
let database: Database;

before(async () => {
  testDb = await createTestDatabase();
  const target = new URL(testDb.url);
  relay = net.createServer((client) => {
    const upstream = net.connect(Number(target.port), target.hostname);
    for (const s of [client, upstream]) {
      sockets.add(s);
      s.on('error', () => {});
      s.on('close', () => sockets.delete(s));
    }
    client.on('data', (d) => frozen || upstream.write(d));
    upstream.on('data', (d) => frozen || client.write(d));
  });
  await new Promise<void>((resolve) => relay.listen(0, '127.0.0.1', resolve));
  const url = new URL(testDb.url);
  url.host = `127.0.0.1:${(relay.address() as net.AddressInfo).port}`;
  database = createDatabase(url.toString(), { queryTimeoutMs: 1500 });
});
after(async () => {
  frozen = false;
  for (const s of sockets) s.destroy();
  await database?.close();
  await new Promise((resolve) => relay?.close(resolve));
  await testDb?.drop();
});

test('queries on connections PostgreSQL stopped answering fail as unavailable, plain SQL and Prisma', async () => {
  assert.equal((await database.pool.query<{ one: number }>('SELECT 1 AS one')).rows[0]?.one, 1);
  assert.equal(await database.prisma.project.count(), 0);
  frozen = true;
  const started = Date.now();
  for (const call of [() => database.pool.query('SELECT 1'), () => database.prisma.project.count()]) {
    await assert.rejects(call(), (err) => isDatabaseUnavailable(err), 'an unavailable error');
  }
  // Bounded only to show that it ends: the plain query waits out its 1.5 s; Prisma's, on a new
  // connection, the 10 s connect timeout.
  assert.ok(Date.now() - started < 30_000, `took ${Date.now() - started} ms`);
});
