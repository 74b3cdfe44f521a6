import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import { test } from 'node:test';
import { BUILD_STATUSES, FINAL_STATUSES } from './statuses.js';

test('the database enum BuildStatus lists exactly the contract statuses, in order', async () => {
  const schema = await readFile(new URL('../../../prisma/schema.prisma', import.meta.url), 'utf8');
  const body = /^enum BuildStatus \{([^}]*)\}/m.exec(schema)?.[1];
  assert.ok(body !== undefined, 'prisma/schema.prisma has no enum BuildStatus');
  const values = body
    .split('\n')
    .map((line) => line.replace(/\/\/.*$/, '').trim())
    .filter(Boolean);
  assert.deepEqual(values, [...BUILD_STATUSES]);
});

test('final statuses are statuses, and a build starts in one that is not final', () => {
  for (const status of FINAL_STATUSES) assert.ok(BUILD_STATUSES.includes(status), status);
  assert.ok(!FINAL_STATUSES.has('queued'));
  assert.ok(!FINAL_STATUSES.has('running'));
});
