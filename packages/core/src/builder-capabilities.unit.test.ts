import assert from 'node:assert/strict';
import { test } from 'node:test';
import {
  type BuilderCapabilities,
  featuresOf,
  normalizePlatform,
  parseBuilderCapabilities,
  specRequirements,
  unmetRequirements,
} from './builder-capabilities.js';
import { parseBuildSpec } from './spec.js';

// What the test daemons report (ListWorkers, Info): buildkitd v0.24.0 and dockerd 20.10's moby worker.
const V024: BuilderCapabilities = {
  version: 'v0.24.0',
  platforms: ['linux/amd64', 'linux/amd64/v2', 'linux/amd64/v3', 'linux/amd64/v4', 'linux/386'],
  features: featuresOf('v0.24.0', false),
};
const DOCKERD_2010: BuilderCapabilities = {
  version: null,
  platforms: ['linux/amd64', 'linux/386'],
  features: featuresOf(null, true),
};

test('featuresOf: by version, and moby worker (dockerd) exports no oci/docker and caches inline only', () => {
  assert.deepEqual(featuresOf('v0.24.0', false), [
    'exporter:oci',
    'exporter:docker',
    'exporter:image-push',
    'attestations',
    'source-date-epoch',
    'cache-export:inline',
    'cache-export:local',
    'cache-export:registry',
    'cache-export:s3',
    'cache-export:ignore-error',
    'git-subdir',
  ]);
  assert.deepEqual(featuresOf('v0.12.5', false), [
    'exporter:oci',
    'exporter:docker',
    'exporter:image-push',
    'attestations',
    'cache-export:inline',
    'cache-export:local',
    'cache-export:registry',
    'cache-export:s3',
    'cache-export:ignore-error',
    'git-subdir',
  ]);
  // 0.11: an export that fails would fail the build, so Kiln's shared cache is not used there.
  assert.equal(featuresOf('v0.11.6', false).includes('cache-export:ignore-error'), false);
  // No Info: older than 0.11, so none of the versioned features.
  assert.deepEqual(featuresOf(null, false), [
    'exporter:oci',
    'exporter:docker',
    'exporter:image-push',
    'cache-export:inline',
    'cache-export:local',
    'cache-export:registry',
  ]);
  // dockerd 20.10 (BuildKit 0.8, no Info): inline cache only, and no git subdirectory.
  assert.deepEqual(featuresOf(null, true), ['cache-export:inline']);
  assert.deepEqual(featuresOf('v0.12.5', true), ['cache-export:inline', 'git-subdir']);
  assert.deepEqual(featuresOf('v1.0.0', false).includes('source-date-epoch'), true);
  assert.deepEqual(featuresOf('not a version', false).includes('attestations'), false);
});

test('specRequirements: the platform asked and the exporter the output needs', () => {
  const req = (input: Record<string, unknown>) => specRequirements(parseBuildSpec(input));
  assert.deepEqual(req({}), { platforms: [], features: [] });
  assert.deepEqual(req({ provenance: 'max', sourceDateEpoch: 0 }).features, [
    'attestations',
    'source-date-epoch',
  ]);
  assert.deepEqual(req({ output: 'type=image,name=r.example/a:1,push=true' }).features, [
    'exporter:image-push',
  ]);
  for (const spec of [
    { provenance: 'min' },
    { sourceDateEpoch: 1 },
    { output: 'type=image,name=r.example/a:1,push=true' },
  ]) {
    const r = req(spec);
    assert.notDeepEqual(unmetRequirements(DOCKERD_2010, r), [], JSON.stringify(spec));
    assert.deepEqual(unmetRequirements(V024, r), [], JSON.stringify(spec));
  }
  assert.deepEqual(req({ output: 'type=oci,dest=a.tar', platform: 'linux/x86_64' }), {
    platforms: ['linux/amd64'],
    features: ['exporter:oci'],
  });
  assert.deepEqual(req({ output: 'type=docker,dest=a.tar' }).features, ['exporter:docker']);
  // A git context's subdirectory: not on dockerd 20.10's BuildKit 0.8 ("subdir not supported yet").
  const subdir = specRequirements(parseBuildSpec({}), { gitSubdir: true });
  assert.deepEqual(subdir.features, ['git-subdir']);
  assert.deepEqual(unmetRequirements(DOCKERD_2010, subdir), ['feature git-subdir']);
  assert.deepEqual(unmetRequirements(V024, subdir), []);
});

test('normalizePlatform: BuildKit names', () => {
  assert.equal(normalizePlatform('linux/x86_64'), 'linux/amd64');
  assert.equal(normalizePlatform('linux/aarch64'), 'linux/arm64');
  assert.equal(normalizePlatform('linux/arm64/v8'), 'linux/arm64');
  assert.equal(normalizePlatform('linux/arm/v7'), 'linux/arm/v7');
  assert.equal(normalizePlatform('linux/i386'), 'linux/386');
});

test('unmetRequirements: platforms with and without variant, features', () => {
  const r = (platforms: string[], features: BuilderCapabilities['features'] = []) => ({
    platforms,
    features,
  });
  assert.deepEqual(unmetRequirements(V024, r(['linux/386'])), []);
  assert.deepEqual(unmetRequirements(DOCKERD_2010, r(['linux/386'])), []);
  assert.deepEqual(unmetRequirements(V024, r(['linux/amd64/v3'])), []);
  assert.deepEqual(unmetRequirements(DOCKERD_2010, r(['linux/amd64/v3'])), ['platform linux/amd64/v3']);
  assert.deepEqual(unmetRequirements(V024, r(['linux/s390x'])), ['platform linux/s390x']);
  assert.deepEqual(unmetRequirements(DOCKERD_2010, r(['linux/amd64'], ['exporter:oci'])), [
    'feature exporter:oci',
  ]);
  assert.deepEqual(unmetRequirements(V024, r([], ['exporter:oci', 'source-date-epoch'])), []);
});

test('parseBuilderCapabilities: published JSON, or undefined; unknown features dropped', () => {
  assert.deepEqual(parseBuilderCapabilities(JSON.stringify(V024)), V024);
  assert.deepEqual(
    parseBuilderCapabilities(
      JSON.stringify({ version: null, platforms: ['linux/amd64'], features: ['x', 'attestations'] }),
    ),
    { version: null, platforms: ['linux/amd64'], features: ['attestations'] },
  );
  for (const bad of [null, 42, '{', '[]', '{"version":1,"platforms":[],"features":[]}', '{"version":null}']) {
    assert.equal(parseBuilderCapabilities(bad), undefined, String(bad));
  }
});
