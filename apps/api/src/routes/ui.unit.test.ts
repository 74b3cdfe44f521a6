import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import { test } from 'node:test';
import { BUILD_STATUSES, FINAL_STATUSES } from '@kiln/contract';
import { contractModule } from './ui.js';

test("the dashboard's contract.js holds the contract's statuses", async () => {
  const mod = (await import(`data:text/javascript,${encodeURIComponent(contractModule())}`)) as {
    BUILD_STATUSES: string[];
    FINAL_STATUSES: string[];
  };
  assert.deepEqual(mod.BUILD_STATUSES, [...BUILD_STATUSES]);
  assert.deepEqual(mod.FINAL_STATUSES, [...FINAL_STATUSES]);
  // The declarations the dashboard's scripts are type-checked against name the same exports.
  const declarations = await readFile(new URL('../../ui/contract.d.ts', import.meta.url), 'utf8');
  const declared = [...declarations.matchAll(/^export declare const (\w+)/gm)].map((m) => m[1]);
  assert.deepEqual(declared.sort(), Object.keys(mod).sort());
});
