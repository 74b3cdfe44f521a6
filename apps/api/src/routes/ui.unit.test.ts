import assert from 'node:assert/strict';
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
});
