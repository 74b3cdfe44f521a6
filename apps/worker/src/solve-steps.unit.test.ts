// SolveSteps: what a solve's status stream leaves of its steps, bounded whatever the graph.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import type { StatusEvent, VertexInfo } from '@kiln/buildkit-client';
import { parseBuildSteps } from '@kiln/core';
import { MAX_STEP_ERROR_CHARS, MAX_STEP_NAME_CHARS, SolveSteps } from './solve-steps.js';

const at = (s: number) => new Date(Date.UTC(2026, 11, 3, 0, 0, s));
const vertex = (i: number, more: Partial<VertexInfo> = {}): VertexInfo => ({
  digest: `sha256:${String(i).padStart(64, '0')}`,
  name: `[${i}] RUN step ${i}`,
  inputs: [],
  cached: false,
  started: at(i),
  completed: at(i + 1),
  ...more,
});
const ended = (v: VertexInfo, state: 'completed' | 'cached' | 'error' = 'completed'): StatusEvent => ({
  type: 'vertex',
  state,
  vertex: v,
});

test('steps are listed in the order they ended; started events and logs are not steps', () => {
  const steps = new SolveSteps();
  const a = vertex(1);
  const b = vertex(2, { cached: true, started: undefined, completed: undefined });
  steps.record({ type: 'vertex', state: 'started', vertex: a });
  steps.record({ type: 'log', vertex: a, stream: 1, data: Buffer.from('x'), timestamp: at(1) });
  steps.record(ended(b, 'cached'));
  steps.record(ended(a));
  assert.deepEqual(
    steps.list().map((s) => s.name),
    ['[2] RUN step 2', '[1] RUN step 1'],
  );
  assert.deepEqual(steps.counts(), { vertices: 2, cached: 1 });
  assert.deepEqual(steps.toStored(), {
    steps: [
      { name: '[2] RUN step 2', started: null, completed: null, cached: true, error: null },
      {
        name: '[1] RUN step 1',
        started: at(1).toISOString(),
        completed: at(2).toISOString(),
        cached: false,
        error: null,
      },
    ],
    omitted: 0,
  });
});

test('past the cap steps are counted once each, not kept; a listed step ended again is refreshed in place', () => {
  const steps = new SolveSteps(3);
  for (let i = 0; i < 10; i++)
    steps.record(ended(vertex(i, { cached: i % 2 === 0 }), i % 2 ? 'completed' : 'cached'));
  steps.record(ended(vertex(1, { error: 'exit code: 1' }), 'error'));
  // An omitted step BuildKit ran again and ended again is still one step.
  steps.record(ended(vertex(7)));
  const stored = steps.toStored();
  assert.deepEqual(
    stored.steps.map((s) => [s.name, s.error]),
    [
      ['[0] RUN step 0', null],
      ['[1] RUN step 1', 'exit code: 1'],
      ['[2] RUN step 2', null],
    ],
  );
  assert.equal(stored.omitted, 7);
  // The cache counters still count all ten (0, 2, 4, 6, 8 cached).
  assert.deepEqual(steps.counts(), { vertices: 10, cached: 5 });
});

test('a huge graph of huge names stays small: names and errors are clipped, the list capped', () => {
  const steps = new SolveSteps();
  const long = 'x'.repeat(1 << 20);
  for (let i = 0; i < 20_000; i++)
    steps.record(ended(vertex(i, { name: `RUN ${long}`, error: long }), 'error'));
  const json = JSON.stringify(steps.toStored());
  const stored = parseBuildSteps(json);
  assert.equal(stored.steps.length, 1000);
  assert.equal(stored.omitted, 19_000);
  assert.equal(stored.steps[0]?.name.length, MAX_STEP_NAME_CHARS);
  assert.ok(stored.steps[0]?.name.endsWith('…'));
  assert.equal(stored.steps[0]?.error?.length, MAX_STEP_ERROR_CHARS);
  assert.ok(json.length < 6_000_000, `${json.length} bytes`);
});

test('a steps object stored before `omitted` existed (a bare array) still reads', () => {
  const step = { name: 'RUN true', started: null, completed: null, cached: true, error: null };
  assert.deepEqual(parseBuildSteps(JSON.stringify([step])), { steps: [step], omitted: 0 });
});
