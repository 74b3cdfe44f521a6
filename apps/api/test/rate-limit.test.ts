// Per-token rate limiting, counted in Redis so that it holds across API replicas.
import assert from 'node:assert/strict';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { loadConfig } from '@kiln/core';
import { Redis } from 'ioredis';
import {
  createTestDatabase,
  freePort,
  type TestDatabase,
  testRedisUrl,
} from '../../../packages/core/test-support/services.js';
import { bootstrapProject, buildApp, createApiDeps } from '../src/index.js';

let db: TestDatabase;
let dataDir: string;
const bases: string[] = [];
const closers: Array<() => Promise<void>> = [];
let token: string;
let otherToken: string;

before(async () => {
  db = await createTestDatabase();
  dataDir = await fs.mkdtemp(path.join(os.tmpdir(), 'kiln-rl-'));
  const redisUrl = testRedisUrl();
  const redis = new Redis(redisUrl);
  await redis.flushdb();
  redis.disconnect();
  // Two replicas of the API on one database and one Redis.
  for (let i = 0; i < 2; i++) {
    const port = await freePort();
    const config = loadConfig({
      KILN_PORT: String(port),
      KILN_PUBLIC_URL: `http://127.0.0.1:${port}`,
      DATABASE_URL: db.url,
      REDIS_URL: redisUrl,
      KILN_DATA_DIR: dataDir,
      KILN_SIGNING_KEY: 'r'.repeat(40),
      KILN_LOG_LEVEL: 'silent',
      KILN_RATE_LIMIT_PER_MINUTE: '6',
      KILN_AUTH_FAILURES_PER_MINUTE: '5',
      // Replica b sits behind a proxy on loopback; a is reached directly.
      ...(i === 1 ? { KILN_TRUSTED_PROXIES: '127.0.0.1' } : {}),
    });
    const deps = await createApiDeps(config);
    const app = await buildApp(deps);
    await app.listen({ port, host: '127.0.0.1' });
    bases.push(`http://127.0.0.1:${port}`);
    closers.push(async () => {
      await app.close();
      await deps.close();
    });
  }
  token = await bootstrapProject(db.url, 'limited');
  otherToken = await bootstrapProject(db.url, 'other');
});

after(async () => {
  for (const close of closers) await close();
  await db.drop();
  await fs.rm(dataDir, { recursive: true, force: true });
});

test('a token over its limit gets 429 rate_limited with Retry-After, on every replica; other tokens do not', async () => {
  const get = (base: string, t: string) =>
    fetch(`${base}/v1/builds`, { headers: { authorization: `Bearer ${t}` } });
  const statuses: number[] = [];
  for (let i = 0; i < 6; i++) statuses.push((await get(bases[i % 2] as string, token)).status);
  assert.deepEqual(statuses, [200, 200, 200, 200, 200, 200]);
  for (const base of bases) {
    const res = await get(base, token);
    assert.equal(res.status, 429);
    const retryAfter = Number(res.headers.get('retry-after'));
    assert.ok(retryAfter > 0 && retryAfter <= 60, `Retry-After ${res.headers.get('retry-after')}`);
    const body = (await res.json()) as { error: { code: string; message: string } };
    assert.equal(body.error.code, 'rate_limited');
    assert.match(body.error.message, /6 requests a minute/);
  }
  assert.equal((await get(bases[0] as string, otherToken)).status, 200);
  // Unauthenticated requests are refused before they could use anyone's budget.
  assert.equal((await fetch(`${bases[0]}/v1/builds`)).status, 401);
  assert.equal((await fetch(`${bases[0]}/healthz`)).status, 200);
});

test('an address past its unknown-token limit is refused before any look-up, on every replica; cached tokens go on working', async () => {
  const get = (base: string, t: string) =>
    fetch(`${base}/v1/builds`, { headers: { authorization: `Bearer ${t}` } });
  const [a, b] = bases as [string, string];
  const inUse = await bootstrapProject(db.url, 'in-use');
  const unused = await bootstrapProject(db.url, 'unused');
  assert.equal((await get(a, inUse)).status, 200); // now in replica a's cache
  const guesses: number[] = [];
  for (let i = 0; i < 5; i++) guesses.push((await get(i % 2 ? b : a, `kiln_guess-${i}-xxxxxxxx`)).status);
  assert.deepEqual(guesses, [401, 401, 401, 401, 401]);
  for (const base of bases) {
    const res = await get(base, 'kiln_guess-more-xxxxxxxx');
    assert.equal(res.status, 429);
    const body = (await res.json()) as { error: { code: string; message: string } };
    assert.equal(body.error.code, 'rate_limited');
    assert.match(
      body.error.message,
      /more than 5 requests a minute with unknown tokens from this address; retry in \d+ s/,
    );
  }
  assert.equal((await get(a, inUse)).status, 200, 'a token in the cache is not looked up');
  // One this replica has not seen is looked up, so it waits out the minute too (a proxy's clients share it).
  assert.equal((await get(b, unused)).status, 429);
});

test("behind a trusted proxy the unknown-token limit counts each client's forwarded address; a direct client's X-Forwarded-For is ignored", async () => {
  const [a, b] = bases as [string, string];
  const get = (base: string, t: string, forwardedFor: string) =>
    fetch(`${base}/v1/builds`, {
      headers: { authorization: `Bearer ${t}`, 'x-forwarded-for': forwardedFor },
    });
  const guesses: number[] = [];
  for (let i = 0; i < 6; i++)
    guesses.push((await get(b, `kiln_proxied-${i}-xxxxxxxx`, '203.0.113.7')).status);
  assert.deepEqual(guesses, [401, 401, 401, 401, 401, 429]);
  // Another client behind the same proxy is not locked out by the first one's guesses, nor by
  // the loopback address the test before locked (the proxy's own).
  const fresh = await bootstrapProject(db.url, 'behind-proxy');
  assert.equal((await get(b, fresh, '198.51.100.20, 203.0.113.8')).status, 200);
  // A client reaching replica a directly cannot leave its own address's limit by naming another:
  // loopback's, used up by the test before, still holds.
  const unseen = await bootstrapProject(db.url, 'direct');
  assert.equal((await get(a, unseen, '198.51.100.99')).status, 429);
});
