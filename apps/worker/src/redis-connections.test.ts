// The worker's own Redis commands against a Redis that stops answering on an open connection (a
// frozen server, a partition that drops packets), reached through a relay that freezes: they
// fail instead of waiting for ever.
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import type { Redis } from 'ioredis';
import {
  type FreezingRelay,
  startFreezingRelay,
} from '../../../packages/core/test-support/freezing-relay.js';
import { env } from '../test-support/helpers.js';
import { commandConnection } from './redis-connections.js';

let relay: FreezingRelay;
let redis: Redis;

before(async () => {
  relay = await startFreezingRelay(env.redisUrl);
  redis = commandConnection(relay.url, 1000);
  redis.on('error', () => {});
});
after(async () => {
  redis?.disconnect();
  await relay?.close();
});

test('a command Redis does not answer fails after the command timeout, and the next one too', async () => {
  assert.equal(await redis.ping(), 'PONG');
  relay.freeze();
  const started = Date.now();
  await assert.rejects(redis.eval('return 1', 0), /Command timed out/);
  await assert.rejects(redis.set('kiln:test:frozen', '1'), /Command timed out/);
  // Bounded only to show that it ends.
  assert.ok(Date.now() - started < 20_000, `took ${Date.now() - started} ms`);
});
