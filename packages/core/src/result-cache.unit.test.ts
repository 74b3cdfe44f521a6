import assert from 'node:assert/strict';
import { test } from 'node:test';
import { resultCacheKey } from './result-cache.js';
import { parseBuildSpec } from './spec.js';

const DIGEST = `sha256:${'a'.repeat(64)}`;
const key = (input: Parameters<typeof parseBuildSpec>[0], digest = DIGEST) =>
  resultCacheKey(digest, parseBuildSpec(input));

test('the artifact name and noCache take no part; map order does not matter', () => {
  const base = key({ output: 'type=tar,dest=app.tar', buildArgs: { A: '1', B: '2' }, labels: { x: 'y' } });
  assert.match(base, /^[0-9a-f]{64}$/);
  assert.equal(
    key({
      output: 'type=tar,dest=other.tar',
      buildArgs: { B: '2', A: '1' },
      labels: { x: 'y' },
      noCache: true,
    }),
    base,
  );
  assert.equal(
    key({ output: { type: 'tar', dest: 'x.tar' }, buildArgs: ['A=1', 'B=2'], labels: { x: 'y' } }),
    base,
  );
});

test('everything else that shapes the artifact does', () => {
  const base = key({ output: 'type=tar,dest=app.tar', buildArgs: { A: '1' } });
  const others = [
    key({ output: 'type=tar,dest=app.tar', buildArgs: { A: '2' } }),
    key({ output: 'type=tar,dest=app.tar', buildArgs: { A: '1', B: '' } }),
    key({ output: 'type=tar,dest=app.tar', buildArgs: { A: '1' }, target: 'builder' }),
    key({ output: 'type=tar,dest=app.tar', buildArgs: { A: '1' }, file: 'other.Dockerfile' }),
    key({ output: 'type=tar,dest=app.tar', buildArgs: { A: '1' }, platform: 'linux/arm64' }),
    key({ output: 'type=tar,dest=app.tar', buildArgs: { A: '1' }, network: 'none' }),
    key({ output: 'type=tar,dest=app.tar', buildArgs: { A: '1' }, labels: { l: 'v' } }),
    key({ output: 'type=oci,dest=app.tar', buildArgs: { A: '1' } }),
    key({ output: 'type=oci,dest=app.tar,name=x', buildArgs: { A: '1' } }),
    key({ output: 'type=tar,dest=app.tar', buildArgs: { A: '1' } }, `sha256:${'b'.repeat(64)}`),
  ];
  assert.equal(new Set([base, ...others]).size, others.length + 1);
});

test('the key is pinned: changing what goes into it, or what the same inputs build, bumps KEY_VERSION', () => {
  // Update this value only together with KEY_VERSION (see its comment).
  assert.equal(
    key({ output: 'type=tar,dest=app.tar', buildArgs: { A: '1' } }),
    '5f525fcbe9a3503cd17d536478495db0b9d473e77995518a6eede4328f91c739',
  );
});
