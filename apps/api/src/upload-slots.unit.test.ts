import assert from 'node:assert/strict';
import { test } from 'node:test';
import type { AppError } from '@kiln/core';
import { UploadSlots } from './upload-slots.js';

test('per project: past the cap uploads wait in arrival order, past the waiting room they are refused', async () => {
  const slots = new UploadSlots(1, 1024);
  const first = await slots.take('a');
  // Another project is not held up.
  const other = await slots.take('b');
  const order: number[] = [];
  const waiting = Array.from({ length: 8 }, (_, i) =>
    slots.take('a').then((slot) => {
      order.push(i);
      return slot;
    }),
  );
  await assert.rejects(
    slots.take('a'),
    (e: AppError) =>
      e.code === 'rate_limited' &&
      /1 context uploads in progress here and 8 waiting \(KILN_MAX_UPLOADS_PER_PROJECT\)/.test(e.message),
  );
  first.release();
  first.release(); // a second release gives nothing back twice
  const second = await waiting[0];
  assert.deepEqual(order, [0]);
  second?.release();
  for (const next of waiting.slice(1)) (await next).release();
  assert.deepEqual(order, [0, 1, 2, 3, 4, 5, 6, 7]);
  // All given back: the next one runs at once.
  (await slots.take('a')).release();
  other.release();
});

test('temp files: all projects share the spool, one takes at most half; released with the slot', async () => {
  const slots = new UploadSlots(4, 1000);
  const full = (e: AppError) => e.code === 'rate_limited' && /take all the room/.test(e.message);
  const half = (e: AppError) => e.code === 'rate_limited' && /take half the room/.test(e.message);
  const a1 = await slots.take('a');
  const a2 = await slots.take('a');
  a1.spool(300);
  a2.spool(200);
  assert.throws(() => a2.spool(1), half);
  const b = await slots.take('b');
  const c = await slots.take('c');
  b.spool(400);
  assert.throws(() => c.spool(101), full);
  c.spool(100);
  // What a released slot held is free again, for its project and for the others.
  a1.release();
  a1.release();
  a2.spool(300);
  const d = await slots.take('d');
  assert.throws(() => d.spool(1), full);
  for (const s of [a2, b, c]) s.release();
  d.spool(500);
  d.release();
});

test('puts into storage: a few at once, the rest wait their turn', async () => {
  const slots = new UploadSlots(8, 1000);
  let running = 0;
  let most = 0;
  const put = async () => {
    running++;
    most = Math.max(most, running);
    await new Promise((resolve) => setTimeout(resolve, 20));
    running--;
  };
  const slot = await slots.take('a');
  await Promise.all(Array.from({ length: 10 }, () => slot.storing(put)));
  assert.equal(most, 4);
  slot.release();
});

test('an upload answered before its body was read keeps its slot and room until the read ends', async () => {
  const slots = new UploadSlots(1, 1000);
  const timedOut = await slots.take('a');
  timedOut.spool(400);
  let endRead: () => void = () => {};
  timedOut.releaseAfter(new Promise<void>((resolve) => (endRead = resolve)));
  timedOut.release();
  // Still reading after the answer: what arrives is counted, and the next upload waits.
  timedOut.spool(100);
  let taken = false;
  const waiting = slots.take('a').then((slot) => {
    taken = true;
    return slot;
  });
  await new Promise((resolve) => setImmediate(resolve));
  assert.equal(taken, false);
  endRead();
  const next = await waiting;
  // All of it given back: the project's whole half fits again; the old slot counts nothing more.
  next.spool(500);
  assert.throws(() => timedOut.spool(1), /given back/);
  next.release();
});
