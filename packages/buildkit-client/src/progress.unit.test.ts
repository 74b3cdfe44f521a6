import assert from 'node:assert/strict';
import { test } from 'node:test';
import { PlainProgressRenderer } from './progress.js';
import type { StatusEvent } from './status.js';

const vertex = { digest: 'sha256:a', name: 'RUN x', inputs: [], cached: false } as unknown as Extract<
  StatusEvent,
  { type: 'vertex' }
>['vertex'];
const at = new Date();
const log = (text: string): StatusEvent => ({
  type: 'log',
  vertex,
  stream: 1,
  data: Buffer.from(text),
  timestamp: at,
});

test('an unfinished line is written when its step ends, not held', () => {
  const out: string[] = [];
  const r = new PlainProgressRenderer((t) => out.push(t));
  r.render(log('one\ntwo'));
  assert.equal(out.join('').includes('two'), false);
  r.render({ type: 'vertex', state: 'completed', vertex });
  assert.match(out.join(''), /#1 [\d.]+ two\n#1 DONE/);
});

test('a line longer than 64 KiB is written in pieces rather than held whole', () => {
  const out: string[] = [];
  const r = new PlainProgressRenderer((t) => out.push(t));
  for (let i = 0; i < 40; i++) r.render(log('y'.repeat(4096)));
  assert.ok(out.join('').length > 64 * 1024);
});
