import assert from 'node:assert/strict';
import { test } from 'node:test';
import { isAppError } from '@kiln/core';
import { ConcurrencyLimit } from './concurrency-limit.js';

test('ConcurrencyLimit runs `active` tasks at once, queues `waiting`, refuses the rest', async () => {
  const limit = new ConcurrencyLimit(2, 1, 'tasks');
  let now = 0;
  let peak = 0;
  const gates: Array<() => void> = [];
  const task = () =>
    limit.run(async () => {
      now++;
      peak = Math.max(peak, now);
      await new Promise<void>((resolve) => gates.push(resolve));
      now--;
      return 'done';
    });
  const accepted = [task(), task(), task()];
  await assert.rejects(task(), (err) => isAppError(err) && err.code === 'rate_limited');
  await new Promise((r) => setImmediate(r));
  assert.equal(gates.length, 2, 'the third waits for a slot');
  gates.shift()?.();
  await new Promise((r) => setImmediate(r));
  assert.equal(gates.length, 2, 'the third got the slot the first gave up');
  for (const open of gates.splice(0)) open();
  assert.deepEqual(await Promise.all(accepted), ['done', 'done', 'done']);
  assert.equal(peak, 2);
  // A failing task gives its slot back too.
  await assert.rejects(
    limit.run(() => Promise.reject(new Error('boom'))),
    /boom/,
  );
  const again = [task(), task()];
  await new Promise((r) => setImmediate(r));
  for (const open of gates.splice(0)) open();
  assert.deepEqual(await Promise.all(again), ['done', 'done']);
});
