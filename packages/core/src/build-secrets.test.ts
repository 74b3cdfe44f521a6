// Build secrets in Redis, sealed under the credentials key: what reaches Redis (and so its
// snapshots and append-only file) and what a worker with another key, or none, gets back.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { after, before, test } from 'node:test';
import { Redis } from 'ioredis';
import { testRedisUrl } from '../test-support/services.js';
import { buildSecretsKey, loadBuildSecrets, requireSecretsKey, storeBuildSecrets } from './build-secrets.js';
import { credentialsKeysOf } from './credentials-keys.js';
import { AppError } from './errors.js';

let redis: Redis;
before(() => {
  redis = new Redis(testRedisUrl());
});
after(() => redis.quit());

const keys = credentialsKeysOf('k'.repeat(40));
const secrets = { npm_token: Buffer.from('s3cret-npm'), pem: Buffer.from([0, 1, 2, 255]) };

test('with a credentials key, values are sealed in Redis, bound to the build and the id', async () => {
  const id = `b-${randomBytes(4).toString('hex')}`;
  await storeBuildSecrets(redis, id, secrets, 60, keys.current);
  const raw = await redis.hgetallBuffer(buildSecretsKey(id));
  assert.deepEqual(Object.keys(raw).sort(), [':sealed', 'npm_token', 'pem']);
  assert.ok(!raw.npm_token?.includes(Buffer.from('s3cret-npm')), 'no value as it was');
  assert.deepEqual(await loadBuildSecrets(redis, id, ['npm_token', 'pem'], keys), secrets);
  // Another key, or none: as if they were gone (the build fails secrets_unavailable).
  assert.equal(
    await loadBuildSecrets(redis, id, ['npm_token'], credentialsKeysOf('x'.repeat(40))),
    undefined,
  );
  assert.equal(await loadBuildSecrets(redis, id, ['npm_token'], undefined), undefined);
  // A sealed value moved to another build, or under another id, does not open.
  const other = `b-${randomBytes(4).toString('hex')}`;
  await redis.hset(buildSecretsKey(other), ':sealed', '1', 'npm_token', raw.npm_token as Buffer);
  assert.equal(await loadBuildSecrets(redis, other, ['npm_token'], keys), undefined);
  await redis.hset(buildSecretsKey(id), 'pem', raw.npm_token as Buffer);
  assert.equal(await loadBuildSecrets(redis, id, ['pem'], keys), undefined);
  await redis.del(buildSecretsKey(id), buildSecretsKey(other));
});

test('a key change: what a previous key sealed opens while it is listed, and only then', async () => {
  const id = `b-${randomBytes(4).toString('hex')}`;
  const old = credentialsKeysOf('o'.repeat(40));
  const rotated = credentialsKeysOf('n'.repeat(40), ['o'.repeat(40)]);
  // Queued by an API that had the old key, run by a worker that has the new one.
  await storeBuildSecrets(redis, id, secrets, 60, old.current);
  assert.deepEqual(await loadBuildSecrets(redis, id, ['npm_token', 'pem'], rotated), secrets);
  assert.equal(
    await loadBuildSecrets(redis, id, ['npm_token'], credentialsKeysOf('n'.repeat(40))),
    undefined,
  );
  await redis.del(buildSecretsKey(id));
});

test('values without the sealed mark, or no key to open them, are as good as gone', async () => {
  const id = `b-${randomBytes(4).toString('hex')}`;
  // As a release before sealing left them: a worker no longer takes such values as they are.
  await redis.hset(buildSecretsKey(id), 'npm_token', 's3cret-npm');
  assert.equal(await loadBuildSecrets(redis, id, ['npm_token'], keys), undefined);
  await storeBuildSecrets(redis, id, secrets, 60, keys.current);
  assert.equal(await loadBuildSecrets(redis, id, ['npm_token'], undefined), undefined);
  assert.equal(await loadBuildSecrets(redis, id, ['npm_token', 'missing'], keys), undefined);
  await redis.del(buildSecretsKey(id));
});

test('a Kiln without a credentials key refuses build secrets (409), naming the setting', () => {
  assert.throws(
    () => requireSecretsKey(undefined),
    (err: unknown) =>
      err instanceof AppError && err.code === 'conflict' && /KILN_CREDENTIALS_KEY/.test(err.message),
  );
  assert.equal(requireSecretsKey(keys), keys.current);
});
