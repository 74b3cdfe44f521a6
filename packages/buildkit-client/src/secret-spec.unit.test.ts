import assert from 'node:assert/strict';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { loadSecrets, MAX_SECRET_SIZE, parseSecretSpec } from './secret-spec.js';

test('--secret values parse the way buildctl and docker read them', () => {
  assert.deepEqual(parseSecretSpec('id=a,src=/f'), { id: 'a', src: '/f' });
  assert.deepEqual(parseSecretSpec('id=a,source=/f'), { id: 'a', src: '/f' });
  assert.deepEqual(parseSecretSpec('id=a,env=VAR'), { id: 'a', env: 'VAR' });
  assert.deepEqual(parseSecretSpec('type=env,id=a,src=VAR'), { id: 'a', env: 'VAR' });
  assert.deepEqual(parseSecretSpec('type=file,id=a,src=/f'), { id: 'a', src: '/f' });
  assert.deepEqual(parseSecretSpec('id=a'), { id: 'a' });
  assert.deepEqual(parseSecretSpec('ID=a,"src=/x,y"'), { id: 'a', src: '/x,y' });
  for (const bad of ['src=/f', 'id=', 'id=a,type=ssh', 'id=a,mode=0400', 'id=a,oops']) {
    assert.throws(() => parseSecretSpec(bad), { code: 'INVALID_ARGUMENT' }, bad);
  }
});

test('loadSecrets reads files and variables; a bare id is the variable when set, else the file', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'kiln-secrets-'));
  try {
    await writeFile(join(dir, 'f'), 'from-file');
    await writeFile(join(dir, 'big'), Buffer.alloc(MAX_SECRET_SIZE + 1));
    const env = { VAR: 'from-env', [join(dir, 'f')]: 'env-named-like-the-file' };
    const got = await loadSecrets(
      [
        { id: 'a', src: join(dir, 'f') },
        { id: 'b', env: 'VAR' },
        { id: 'VAR' },
        { id: join(dir, 'f') },
        { id: 'unset', env: 'NOT_SET' },
      ],
      { env },
    );
    assert.deepEqual(Object.fromEntries(Object.entries(got).map(([k, v]) => [k, v.toString()])), {
      a: 'from-file',
      b: 'from-env',
      VAR: 'from-env',
      [join(dir, 'f')]: 'env-named-like-the-file',
    });
    assert.deepEqual(Object.keys(await loadSecrets([{ id: join(dir, 'f') }], { env: {} })), [join(dir, 'f')]);
    const relative = await loadSecrets([{ id: 'r', src: 'f' }, { id: 'f' }], { env: {}, cwd: dir });
    assert.deepEqual(relative.r?.toString(), 'from-file');
    assert.deepEqual(relative.f?.toString(), 'from-file');
    await assert.rejects(
      loadSecrets([{ id: 'x', src: join(dir, 'missing') }], { env: {} }),
      /secret x: cannot read .*ENOENT/,
    );
    await assert.rejects(
      loadSecrets([{ id: 'x', src: join(dir, 'big') }], { env: {} }),
      /secret x is too big/,
    );
    await assert.rejects(
      loadSecrets([{ id: 'x', env: 'V' }], { env: { V: 'v'.repeat(MAX_SECRET_SIZE + 1) } }),
      /secret x is too big/,
    );
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});
