// The README says what the code does: its reference section is the commands' own --help (see
// scripts/readme-reference.ts), every flag its prose names is one of them, and its exit-code
// table is the codes in errors.ts.
import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import { test } from 'node:test';
import { README, reference, withReference } from '../scripts/readme-reference.js';
import * as errors from './errors.js';

test('the reference section is the current --help of every command', async () => {
  const readme = await readFile(README, 'utf8');
  assert.equal(
    readme,
    withReference(readme, await reference()),
    'apps/cli/README.md is stale: run node --conditions=kiln-source --import tsx apps/cli/scripts/readme-reference.ts',
  );
});

test('the exit-code table lists exactly the codes kiln exits with', async () => {
  const readme = await readFile(README, 'utf8');
  const table = readme.slice(readme.indexOf('## Exit codes'), readme.indexOf('## In CI'));
  const documented = [...table.matchAll(/^\| (\d+) +\|/gm)].map((m) => Number(m[1]));
  const codes = Object.entries(errors)
    .filter(([name]) => name.startsWith('EXIT_'))
    .map(([, value]) => value as number);
  assert.deepEqual(
    documented.sort((a, b) => a - b),
    codes.sort((a, b) => a - b),
  );
});

test('API answers map to the documented codes', () => {
  assert.equal(errors.exitCodeForStatus(401, 'unauthorized'), errors.EXIT_AUTH);
  assert.equal(errors.exitCodeForStatus(403, 'forbidden'), errors.EXIT_AUTH);
  assert.equal(errors.exitCodeForStatus(503, 'no_builder_available'), errors.EXIT_UNAVAILABLE);
  assert.equal(errors.exitCodeForStatus(500, 'internal'), errors.EXIT_UNAVAILABLE);
  assert.equal(errors.exitCodeForStatus(429, 'rate_limited'), errors.EXIT_UNAVAILABLE);
  assert.equal(errors.exitCodeForStatus(429, 'quota_exceeded'), errors.EXIT_FAILURE);
  assert.equal(errors.exitCodeForStatus(429, 'http_429'), errors.EXIT_UNAVAILABLE);
  assert.equal(errors.exitCodeForStatus(408, 'request_timeout'), errors.EXIT_UNAVAILABLE);
  assert.equal(errors.exitCodeForStatus(400, 'invalid_spec'), errors.EXIT_FAILURE);
});

test('a build that failed for the service (builders down or lost) is 3; for itself, 1', () => {
  for (const code of ['infrastructure', 'no_builder_available', 'worker_lost', 'secrets_unavailable'])
    assert.equal(errors.exitCodeForBuildError(code), errors.EXIT_UNAVAILABLE, code);
  for (const code of [
    'build_failed',
    'timeout',
    'output_too_large',
    'canceled',
    'no_capable_builder',
    undefined,
  ])
    assert.equal(errors.exitCodeForBuildError(code), errors.EXIT_FAILURE, code);
});

test('every --flag the README names outside the reference is one a command takes', async () => {
  const help = await reference();
  // Commands of other tools (`node …`, `npm …`, `tar …`) name their own flags.
  const prose = withReference(await readFile(README, 'utf8'), '').replace(/`(node|npm|tar) [^`]*`/g, '');
  const named = new Set([...prose.matchAll(/(?<![\w-])--[a-z][a-z-]*/g)].map((m) => m[0]));
  // Named as what kiln refuses.
  named.delete('--ssh');
  const unknown = [...named].filter((flag) => !new RegExp(`(?<![\\w-])${flag}(?![\\w-])`).test(help));
  assert.deepEqual(unknown, []);
});
