// The builders the API sees for a dns+tcp:// name, from what workers publish in a real Redis:
// the members when there are some, the name itself when none is known (so a spec is not refused
// for want of a builder that may come).
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import {
  builderCapabilitiesKey,
  builderMembersKey,
  createLogger,
  loadConfig,
  parseBuildSpec,
} from '@kiln/core';
import { Redis } from 'ioredis';
import { testRedisUrl } from '../../../packages/core/test-support/services.js';
import { checkSomeBuilderCanServe } from './builder-capabilities.js';
import { currentBuilders } from './builder-members.js';
import type { ApiDeps } from './deps.js';

const skip = process.env.KILN_TEST_REDIS_URL ? false : 'needs KILN_TEST_REDIS_URL (npm test)';
const NAME = 'dns+tcp://kiln-buildkitd.kiln.svc.cluster.local:1234';
let redis: Redis;
let deps: ApiDeps;

before(async () => {
  if (skip) return;
  redis = new Redis(testRedisUrl());
  await redis.flushdb();
  const config = loadConfig({
    DATABASE_URL: 'postgresql://x@127.0.0.1:9/x',
    REDIS_URL: 'redis://127.0.0.1:9',
    KILN_SIGNING_KEY: 'k'.repeat(40),
    KILN_BUILDERS: `docker:///var/run/docker.sock,${NAME}=3`,
  });
  deps = { config, redis, logger: createLogger('test', 'silent') } as unknown as ApiDeps;
});
after(async () => {
  await redis?.quit();
});

test('a dns+tcp:// name stands for its published members, or for itself while none is known', {
  skip,
}, async () => {
  const docker = { address: 'docker:///var/run/docker.sock', concurrency: 2 };
  assert.deepEqual(await currentBuilders(deps), [docker, { address: NAME, concurrency: 3 }]);
  await redis.set(builderMembersKey(NAME), JSON.stringify([]));
  assert.deepEqual(await currentBuilders(deps), [docker, { address: NAME, concurrency: 3 }]);
  await redis.set(builderMembersKey(NAME), JSON.stringify(['tcp://10.0.0.1:1234', 'tcp://10.0.0.2:1234']));
  assert.deepEqual(await currentBuilders(deps), [
    docker,
    { address: 'tcp://10.0.0.1:1234', concurrency: 3 },
    { address: 'tcp://10.0.0.2:1234', concurrency: 3 },
  ]);
});

test('a spec is refused only when every member is known and none can serve it', { skip }, async () => {
  const spec = parseBuildSpec({ platform: 'linux/riscv64' });
  const amd64 = JSON.stringify({ version: 'v0.24.0', platforms: ['linux/amd64'], features: [] });
  await redis.hset(builderCapabilitiesKey(), 'docker:///var/run/docker.sock', amd64);
  await redis.set(builderMembersKey(NAME), JSON.stringify([]));
  await checkSomeBuilderCanServe(deps, spec);
  await redis.set(builderMembersKey(NAME), JSON.stringify(['tcp://10.0.0.1:1234']));
  await checkSomeBuilderCanServe(deps, spec);
  await redis.hset(builderCapabilitiesKey(), 'tcp://10.0.0.1:1234', amd64);
  await assert.rejects(checkSomeBuilderCanServe(deps, spec), { code: 'no_capable_builder' });
});
