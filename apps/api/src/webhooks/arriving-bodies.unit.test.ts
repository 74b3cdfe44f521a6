import assert from 'node:assert/strict';
import { test } from 'node:test';
import { ArrivingBodies } from './arriving-bodies.js';

function clocked() {
  let now = 0;
  const bodies = new ArrivingBodies(100, 2_000, () => now);
  const gaveWay: string[] = [];
  const open = (name: string) => bodies.open(() => gaveWay.push(name));
  return { bodies, gaveWay, open, advance: (ms: number) => (now += ms) };
}

test('bodies share the budget; a chunk past it is refused while every other body is young', () => {
  const { gaveWay, open } = clocked();
  const a = open('a');
  const b = open('b');
  assert.ok(a.take(60));
  assert.ok(b.take(40));
  assert.equal(b.take(1), false);
  assert.equal(open('c').take(1), false);
  a.close();
  assert.ok(b.take(60));
  assert.deepEqual(gaveWay, []);
});

test('a body reading for longer than the grace gives way, oldest first, only as much as needed', () => {
  const { gaveWay, open, advance } = clocked();
  const a = open('a');
  assert.ok(a.take(40));
  advance(500);
  const b = open('b');
  assert.ok(b.take(40));
  const idle = open('idle');
  advance(1_600);
  // `a` is 2.1 s old, `b` 1.6 s: only `a` may give way, and `idle` holds nothing to give.
  const c = open('c');
  assert.ok(c.take(50));
  assert.deepEqual(gaveWay, ['a']);
  assert.equal(a.take(1), false, 'a closed reader takes nothing more');
  assert.equal(c.take(20), false, 'b is not old enough yet');
  advance(500);
  assert.ok(c.take(20));
  assert.deepEqual(gaveWay, ['a', 'b']);
  idle.close();
  // What a closed reader held is free, and closing twice frees nothing twice.
  b.close();
  assert.ok(open('d').take(30));
  assert.equal(open('e').take(1), false);
});

test('no body gives way for nothing: only when those old enough would make room', () => {
  const { gaveWay, open, advance } = clocked();
  assert.ok(open('old').take(30));
  advance(2_500);
  assert.ok(open('young').take(70));
  // 30 bytes free once `old` gives way: not enough for 40, so it keeps reading.
  assert.equal(open('big').take(40), false);
  assert.deepEqual(gaveWay, []);
  assert.ok(open('fits').take(30));
  assert.deepEqual(gaveWay, ['old']);
});
