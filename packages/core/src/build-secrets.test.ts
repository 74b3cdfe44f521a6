// Build secrets in Redis, sealed under the credentials key: what reaches Redis (and so its
// snapshots and append-only file) and what a worker with another key, or none, gets back.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { after, before, test } from 'node:test';
import { Redis } from 'ioredis';
import { testRedisUrl } from '../test-support/services.js';
import { buildSecretsKey, loadBuildSecrets, storeBuildSecrets } from './build-secrets.js';
import { credentialsKey } from './registry-credentials.js';

let redis: Redis;
before(() => {
  redis = new Redis(testRedisUrl());
});
after(() => redis.quit());

const key = credentialsKey('k'.repeat(40));
const secrets = { npm_token: Buffer.from('s3cret-npm'), pem: Buffer.from([0, 1, 2, 255]) };

test('with a credentials key, values are sealed in Redis, bound to the build and the id', async () => {
  const id = `b-${randomBytes(4).toString('hex')}`;
  await storeBuildSecrets(redis, id, secrets, 60, key);
  const raw = await redis.hgetallBuffer(buildSecretsKey(id));
  assert.deepEqual(Object.keys(raw).sort(), [':sealed', 'npm_token', 'pem']);
  assert.ok(!raw.npm_token?.includes(Buffer.from('s3cret-npm')), 'no value as it was');
  assert.deepEqual(await loadBuildSecrets(redis, id, ['npm_token', 'pem'], key), secrets);
  // Another key, or none: as if they were gone (the build fails secrets_unavailable).
  assert.equal(await loadBuildSecrets(redis, id, ['npm_token'], credentialsKey('x'.repeat(40))), undefined);
  assert.equal(await loadBuildSecrets(redis, id, ['npm_token'], undefined), undefined);
  // A sealed value moved to another build, or under another id, does not open.
  const other = `b-${randomBytes(4).toString('hex')}`;
  await redis.hset(buildSecretsKey(other), ':sealed', '1', 'npm_token', raw.npm_token as Buffer);
  assert.equal(await loadBuildSecrets(redis, other, ['npm_token'], key), undefined);
  await redis.hset(buildSecretsKey(id), 'pem', raw.npm_token as Buffer);
  assert.equal(await loadBuildSecrets(redis, id, ['pem'], key), undefined);
  await redis.del(buildSecretsKey(id), buildSecretsKey(other));
});

test('without a credentials key, values go as they are and come back', async () => {
  const id = `b-${randomBytes(4).toString('hex')}`;
  await storeBuildSecrets(redis, id, secrets, 60, undefined);
  assert.deepEqual((await redis.hgetBuffer(buildSecretsKey(id), 'npm_token'))?.toString(), 's3cret-npm');
  assert.deepEqual(await loadBuildSecrets(redis, id, ['npm_token', 'pem'], undefined), secrets);
  assert.equal(await loadBuildSecrets(redis, id, ['npm_token', 'missing'], undefined), undefined);
  await redis.del(buildSecretsKey(id));
});
