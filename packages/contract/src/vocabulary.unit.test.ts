import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import { test } from 'node:test';
import { scopeAllows, TOKEN_SCOPES } from './scopes.js';
import { BUILD_STATUSES, FINAL_STATUSES } from './statuses.js';

/** The values of `enum <name> { ... }` in prisma/schema.prisma, in order. */
async function databaseEnum(name: string): Promise<string[]> {
  const schema = await readFile(new URL('../../../prisma/schema.prisma', import.meta.url), 'utf8');
  const body = new RegExp(`^enum ${name} \\{([^}]*)\\}`, 'm').exec(schema)?.[1];
  assert.ok(body !== undefined, `prisma/schema.prisma has no enum ${name}`);
  return body
    .split('\n')
    .map((line) => line.replace(/\/\/.*$/, '').trim())
    .filter(Boolean);
}

test('the database enums list exactly the contract statuses and token scopes, in order', async () => {
  assert.deepEqual(await databaseEnum('BuildStatus'), [...BUILD_STATUSES]);
  assert.deepEqual(await databaseEnum('TokenScope'), [...TOKEN_SCOPES]);
});

test('final statuses are statuses, and a build starts in one that is not final', () => {
  for (const status of FINAL_STATUSES) assert.ok(BUILD_STATUSES.includes(status), status);
  assert.ok(!FINAL_STATUSES.has('queued'));
  assert.ok(!FINAL_STATUSES.has('running'));
});

test('each scope includes the ones before it and none after', () => {
  assert.ok(scopeAllows('manage', 'build') && scopeAllows('manage', 'read') && scopeAllows('build', 'read'));
  assert.ok(scopeAllows('read', 'read'));
  assert.ok(
    !scopeAllows('read', 'build') && !scopeAllows('build', 'manage') && !scopeAllows('read', 'manage'),
  );
});
