import assert from 'node:assert/strict';
import { test } from 'node:test';
import { buildCacheFor, buildCacheOptions } from './build-cache.js';

const s3 = {
  kind: 's3' as const,
  bucket: 'b',
  region: 'r',
  endpoint: 'http://kiln-view:9000',
  forcePathStyle: true,
  accessKeyId: 'AK',
  secretAccessKey: 'SK',
};

test('the shared cache: S3 on S3 storage, the session elsewhere, per-project prefix, mode=max', () => {
  const local = { kind: 'local' as const, root: '/x', publicBaseUrl: 'http://k', signingKey: 'k' };
  assert.deepEqual(buildCacheFor(local, 'auto', undefined, 7), { kind: 'session', maxBytes: 7 });
  assert.equal(buildCacheFor(local, 'off', undefined, 7), undefined);
  assert.equal(buildCacheFor(s3, 'off', undefined, 1), undefined);
  // Kiln's own storage keys (AK/SK) never go to the builders: only theirs, or none.
  const withoutKeys = buildCacheFor(s3, 'auto', undefined, 5);
  assert.ok(withoutKeys?.kind === 's3');
  assert.equal(withoutKeys.accessKeyId, undefined);
  assert.equal(withoutKeys.secretAccessKey, undefined);
  const cache = buildCacheFor(s3, 'auto', 'http://minio:9000', 5, {
    accessKeyId: 'BAK',
    secretAccessKey: 'BSK',
  });
  assert.ok(cache?.kind === 's3');
  assert.equal(cache.endpoint, 'http://minio:9000', 'the builders’ endpoint wins');
  const { cacheImports, cacheExports } = buildCacheOptions(cache, 'p1');
  assert.deepEqual(cacheImports, [
    {
      type: 's3',
      attrs: {
        bucket: 'b',
        region: 'r',
        prefix: 'cache/p1/',
        name: 'kiln',
        use_path_style: 'true',
        endpoint_url: 'http://minio:9000',
        access_key_id: 'BAK',
        secret_access_key: 'BSK',
      },
    },
  ]);
  assert.equal(cacheExports[0]?.attrs.mode, 'max');
  assert.equal(
    cacheExports[0]?.attrs['ignore-error'],
    'true',
    'a failed cache export does not fail the build',
  );
  assert.equal(cacheExports[0]?.attrs.prefix, 'cache/p1/');
  const { access_key_id: _a, secret_access_key: _s, ...anonymous } = cacheImports[0]?.attrs ?? {};
  const daemonKeys = buildCacheOptions(
    { ...cache, accessKeyId: undefined, secretAccessKey: undefined } as never,
    'p2',
  );
  assert.deepEqual(daemonKeys.cacheImports[0]?.attrs, { ...anonymous, prefix: 'cache/p2/' });
});
