import assert from 'node:assert/strict';
import { test } from 'node:test';
import type { AppError } from '@kiln/core';
import { UploadSlots } from './upload-slots.js';

test('per project: past the cap uploads wait in arrival order, past the waiting room they are refused', async () => {
  const slots = new UploadSlots(1);
  const first = await slots.take('a');
  // Another project is not held up.
  const other = await slots.take('b');
  const order: number[] = [];
  const waiting = Array.from({ length: 8 }, (_, i) =>
    slots.take('a').then((release) => {
      order.push(i);
      return release;
    }),
  );
  await assert.rejects(
    slots.take('a'),
    (e: AppError) =>
      e.code === 'rate_limited' &&
      /1 context uploads in progress here and 8 waiting \(KILN_MAX_UPLOADS_PER_PROJECT\)/.test(e.message),
  );
  first();
  first(); // a second release gives nothing back twice
  const second = await waiting[0];
  assert.deepEqual(order, [0]);
  second?.();
  for (const next of waiting.slice(1)) (await next)();
  assert.deepEqual(order, [0, 1, 2, 3, 4, 5, 6, 7]);
  // All given back: the next one runs at once.
  (await slots.take('a'))();
  other();
});
