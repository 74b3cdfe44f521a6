import assert from 'node:assert/strict';
import { test } from 'node:test';
import { main } from './cli.js';

/** Runs main with stderr captured. */
async function run(argv: string[]): Promise<{ code: number; stderr: string }> {
  const write = process.stderr.write;
  let stderr = '';
  process.stderr.write = ((chunk: string | Uint8Array) => {
    stderr += chunk.toString();
    return true;
  }) as typeof process.stderr.write;
  try {
    return { code: await main(argv), stderr };
  } finally {
    process.stderr.write = write;
  }
}

test('an unknown or malformed option is a usage error naming it, not a crash', async () => {
  const unknown = await run(['build', '--bogus']);
  assert.equal(unknown.code, 2);
  assert.match(unknown.stderr, /^bkctl: Unknown option '--bogus'/);
  assert.match(unknown.stderr, /usage:/);
  const missing = await run(['build', '--addr']);
  assert.equal(missing.code, 2);
  assert.match(missing.stderr, /^bkctl: Option '--addr <value>' argument missing/);
});

test('an unknown command prints the usage, exit 2', async () => {
  const r = await run(['frobnicate']);
  assert.equal(r.code, 2);
  assert.match(r.stderr, /^usage:/);
});
