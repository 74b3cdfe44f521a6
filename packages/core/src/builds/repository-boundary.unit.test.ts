// BuildRepository is the only code that reads or writes Build and BuildAttempt rows: this test
// reads every source file of the workspace (not tests, which set rows up by hand) and fails on a
// Prisma delegate call or an SQL mention of those tables anywhere else.
import assert from 'node:assert/strict';
import { readdir, readFile } from 'node:fs/promises';
import path from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../../..');
const ALLOWED = new Set([
  'packages/core/src/builds/repository.ts',
  'packages/core/src/builds/artifact-lock.ts',
]);
const SOURCE_DIRS = [
  'apps/api/src',
  'apps/worker/src',
  'apps/cli/src',
  'packages/core/src',
  'packages/contract/src',
];

/** `x.build.findMany(`, `tx.buildAttempt.update(`, `"Build"` / `"BuildAttempt"` in SQL. */
const ACCESS = /\.(build|buildAttempt)\s*\.\s*[a-zA-Z]+\s*\(|"Build(Attempt)?"\s/;

async function* sources(dir: string): AsyncGenerator<string> {
  let entries: import('node:fs').Dirent[];
  try {
    entries = await readdir(path.join(ROOT, dir), { withFileTypes: true });
  } catch {
    return;
  }
  for (const e of entries) {
    const rel = path.posix.join(dir, e.name);
    if (e.isDirectory()) {
      if (e.name !== 'generated' && e.name !== 'node_modules') yield* sources(rel);
    } else if (/\.ts$/.test(e.name) && !/\.test\.ts$|test-helpers\.ts$/.test(e.name)) yield rel;
  }
}

test('no code outside the build repository queries Build or BuildAttempt', async () => {
  const offenders: string[] = [];
  let files = 0;
  for (const dir of SOURCE_DIRS) {
    for await (const file of sources(dir)) {
      files++;
      if (ALLOWED.has(file)) continue;
      const lines = (await readFile(path.join(ROOT, file), 'utf8')).split('\n');
      lines.forEach((line, i) => {
        if (ACCESS.test(line)) offenders.push(`${file}:${i + 1}: ${line.trim()}`);
      });
    }
  }
  assert.ok(files > 50, `read only ${files} files: the walk is broken`);
  assert.deepEqual(offenders, []);
});

test('the pattern catches what it is for', () => {
  for (const line of [
    'await prisma.build.findMany({',
    'tx.buildAttempt.updateMany({ where',
    'await deps.db.build .count(',
    'SELECT id FROM "Build" WHERE',
    'UPDATE "BuildAttempt" SET',
  ]) {
    assert.ok(ACCESS.test(line), line);
  }
  for (const line of ['const build = await repo.byId(id);', 'build.status', "'build.succeeded'"]) {
    assert.ok(!ACCESS.test(line), line);
  }
});
