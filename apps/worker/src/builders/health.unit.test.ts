import assert from 'node:assert/strict';
import { test } from 'node:test';
import { capabilitiesOf, defaultPlatformOf } from './health.js';

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

test('capabilitiesOf: version from Info, else from the workers; every platform once; moby worker', () => {
  const caps = capabilitiesOf(
    [
      {
        id: 'w1',
        labels: {},
        platforms: [
          { os: 'linux', architecture: 'amd64' },
          { os: 'linux', architecture: 'amd64', variant: 'v3' },
        ],
        buildkitVersion: { package: 'github.com/moby/buildkit', version: 'v0.12.0', revision: 'x' },
      },
      { id: 'w2', labels: {}, platforms: [{ os: 'linux', architecture: 'amd64' }] },
    ],
    null,
  );
  assert.equal(caps.version, 'v0.12.0');
  assert.deepEqual(caps.platforms, ['linux/amd64', 'linux/amd64/v3']);
  assert.ok(caps.features.includes('attestations') && !caps.features.includes('source-date-epoch'));
  const moby = capabilitiesOf(
    [{ id: 'moby', labels: {}, platforms: [{ os: 'linux', architecture: 'amd64' }] }],
    null,
  );
  assert.deepEqual(moby, { version: null, platforms: ['linux/amd64'], features: ['cache-export:inline'] });
  assert.equal(capabilitiesOf([], 'v0.24.0').version, 'v0.24.0');
});
