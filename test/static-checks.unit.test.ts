// The checks CI would otherwise never run: `npm test` builds each package's sources (which
// type-checks them), but the tests and their support code run through tsx, which strips types
// without checking them. A test double that drifts from the type it stands in for is caught here.
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { readdir } from 'node:fs/promises';
import path from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';

const root = fileURLToPath(new URL('..', import.meta.url));
const bin = (name: string) => path.join(root, 'node_modules/.bin', name);
const exec = promisify(execFile);

/** Runs a command from the root; resolves with its exit code and output, whatever the code. */
async function run(file: string, args: string[]): Promise<{ code: number; output: string }> {
  try {
    const { stdout, stderr } = await exec(file, args, { cwd: root, maxBuffer: 64 * 1024 * 1024 });
    return { code: 0, output: stdout + stderr };
  } catch (err) {
    const e = err as { code?: unknown; stdout?: string; stderr?: string };
    if (typeof e.code !== 'number') throw err;
    return { code: e.code, output: `${e.stdout ?? ''}${e.stderr ?? ''}` };
  }
}

/** Type-checks one project; returns the files it covered (absolute paths). */
async function typecheck(project: string): Promise<string[]> {
  const { code, output } = await run(bin('tsc'), ['-p', project, '--listFiles']);
  const errors = output.split('\n').filter((line) => /error TS\d+/.test(line));
  assert.deepEqual(errors, [], `tsc -p ${project}`);
  assert.equal(code, 0, output.slice(-4000));
  return output.split('\n').filter((line) => line.startsWith(root));
}

test('every test file and its support code type-check, the dashboard tests with the DOM', async () => {
  const [node, dashboard, listed] = await Promise.all([
    typecheck('tsconfig.json'),
    typecheck('test/dashboard/tsconfig.json'),
    run('bash', ['-c', 'source scripts/lib/test-files.sh && kiln_test_files']),
  ]);
  assert.equal(listed.code, 0, listed.output);
  const covered = new Set([...node, ...dashboard]);
  const tests = listed.output.trim().split('\n');
  assert.ok(tests.length > 100, `${tests.length} test files found`);
  // A test file in a place neither project includes would silently go unchecked.
  assert.deepEqual(
    tests.filter((file) => !covered.has(path.join(root, file))),
    [],
  );
});

test("the dashboard's browser scripts type-check", async () => {
  const ui = 'apps/api/ui';
  const covered = new Set(await typecheck(`${ui}/tsconfig.json`));
  const scripts = (await readdir(path.join(root, ui))).filter((name) => name.endsWith('.js'));
  assert.ok(scripts.length >= 5, `${scripts.length} scripts found`);
  assert.deepEqual(
    scripts.filter((name) => !covered.has(path.join(root, ui, name))),
    [],
  );
});

// `npm test` gives every test its services, so only this keeps `npm run test:unit` runnable.
test('no unit test reaches for a service', async () => {
  const { code, output } = await run('bash', [
    '-c',
    'source scripts/lib/test-files.sh && kiln_unit_tests_using_services',
  ]);
  assert.equal(code, 0, `rename these to *.test.ts, or drop the service:\n${output}`);
});

test('biome finds nothing to lint or format', async () => {
  const { code, output } = await run(bin('biome'), ['check', '--colors=off', '.']);
  assert.equal(code, 0, output.slice(-4000));
});
