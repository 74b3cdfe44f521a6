import assert from 'node:assert/strict';
import { test } from 'node:test';
import { defaultPlatformOf } from './health.js';

test('defaultPlatformOf: the first platform of the first BuildKit worker, os/arch[/variant]', () => {
  const worker = (platforms: Array<{ os: string; architecture: string; variant?: string }>) => ({
    id: 'w',
    labels: {},
    platforms,
  });
  assert.equal(
    defaultPlatformOf([
      worker([
        { os: 'linux', architecture: 'amd64' },
        { os: 'linux', architecture: 'amd64', variant: 'v2' },
      ]),
      worker([{ os: 'linux', architecture: 'arm64' }]),
    ]),
    'linux/amd64',
  );
  assert.equal(
    defaultPlatformOf([worker([{ os: 'linux', architecture: 'arm', variant: 'v7' }])]),
    'linux/arm/v7',
  );
  assert.equal(defaultPlatformOf([worker([])]), undefined);
  assert.equal(defaultPlatformOf([]), undefined);
});
