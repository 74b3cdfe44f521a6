// The migration Job's command (deploy/kubernetes/base/migrate-job.yaml) as a process, on a fresh
// PostgreSQL database: it applies every migration and exits 0, then finds nothing to do; a bad
// setting exits 1 naming the variable.
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import path from 'node:path';
import { after, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import pg from 'pg';
import { createTestDatabase } from '../../../packages/core/test-support/services.js';

const MIGRATE = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../dist/migrate.js');
const skip = process.env.KILN_TEST_DATABASE_URL ? false : 'needs KILN_TEST_DATABASE_URL (npm test)';

const run = (env: Record<string, string>) =>
  new Promise<{ code: number | null; out: string }>((resolve) => {
    const child = execFile(
      process.execPath,
      [MIGRATE],
      { env: { PATH: process.env.PATH ?? '', ...env } },
      (_err, stdout, stderr) => resolve({ code: child.exitCode, out: stdout + stderr }),
    );
  });

test('node apps/worker/dist/migrate.js migrates, then is a no-op; a bad setting exits 1', {
  skip,
}, async () => {
  const db = await createTestDatabase({ migrated: false });
  after(() => db.drop());
  const env = { DATABASE_URL: db.url, REDIS_URL: 'redis://127.0.0.1:9', KILN_S3_BUCKET: 'b' };
  const first = await run(env);
  assert.equal(first.code, 0, first.out);
  assert.match(first.out, /migrations applied/);
  const client = new pg.Client({ connectionString: db.url });
  await client.connect();
  const { rows } = await client.query(
    'SELECT count(*)::int AS n FROM _prisma_migrations WHERE finished_at IS NOT NULL',
  );
  await client.end();
  assert.ok(rows[0].n > 0);
  const again = await run(env);
  assert.equal(again.code, 0, again.out);
  assert.match(again.out, /the database is up to date/);
  const bad = await run({ ...env, KILN_BUILDERS: 'ftp://x' });
  assert.equal(bad.code, 1);
  assert.match(bad.out, /kiln-migrate: configuration error: KILN_BUILDERS/);
});
