import assert from 'node:assert/strict';
import { test } from 'node:test';
import { PlainProgressRenderer } from './progress.js';
import { type StatusEvent, StatusTracker } from './status.js';

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

const ts = (iso: string) => {
  const ms = Date.parse(iso);
  return { seconds: Math.floor(ms / 1000), nanos: (ms % 1000) * 1e6 };
};

test('a vertex BuildKit starts again after it completed ends again, as buildctl shows it', () => {
  // What buildkitd v0.24.0 sends for `[internal] load build context` (--progress rawjson).
  const digest = 'sha256:ctx';
  const name = '[internal] load build context';
  const tracker = new StatusTracker();
  const out: string[] = [];
  const r = new PlainProgressRenderer((t) => out.push(t));
  const feed = (res: Parameters<StatusTracker['update']>[0]) => {
    for (const e of tracker.update(res)) r.render(e);
  };
  feed({ vertexes: [{ digest, name, cached: false }] });
  feed({
    vertexes: [
      {
        digest,
        name,
        cached: false,
        started: ts('2026-12-04T06:18:16.499Z'),
        completed: ts('2026-12-04T06:18:16.499Z'),
      },
    ],
  });
  feed({ vertexes: [{ digest, name, cached: false, started: ts('2026-12-04T06:18:16.500Z') }] });
  const transfer = {
    ID: 'transferring context:',
    vertex: digest,
    name: 'transferring',
    current: 50_096_327,
    total: 0,
    started: ts('2026-12-04T06:18:16.501Z'),
    timestamp: ts('2026-12-04T06:18:17.418Z'),
  };
  feed({ statuses: [transfer] });
  feed({ statuses: [{ ...transfer, completed: ts('2026-12-04T06:18:17.418Z') }] });
  const ended = {
    vertexes: [
      {
        digest,
        name,
        cached: false,
        started: ts('2026-12-04T06:18:16.500Z'),
        completed: ts('2026-12-04T06:18:17.421Z'),
      },
    ],
  };
  feed(ended);
  assert.equal(
    out.join(''),
    [
      '#1 [internal] load build context',
      '#1 DONE 0.0s',
      '',
      '#1 [internal] load build context',
      '#1 transferring context: 50.10MB 0.9s done',
      '#1 DONE 0.9s',
      '',
    ].join('\n'),
  );
  // A repeated completed update is not a second end.
  feed(ended);
  assert.equal(out.join('').match(/DONE/g)?.length, 2);
});

test('progress amounts use decimal units as buildctl prints them', () => {
  const out: string[] = [];
  const r = new PlainProgressRenderer((t) => out.push(t));
  const p = (current: number, total: number): StatusEvent => ({
    type: 'progress',
    vertex,
    id: 'sha256:layer',
    name: 'x',
    current,
    total,
    completed: true,
    timestamp: at,
  });
  for (const [c, t] of [
    [0, 0],
    [999, 0],
    [1000, 0],
    [292_555, 0],
    [1_500_000, 3_400_000_000],
  ] as const) {
    r.render(p(c, t));
  }
  assert.deepEqual(out.join('').trim().split('\n'), [
    '#1 sha256:layer done',
    '#1 sha256:layer 999B done',
    '#1 sha256:layer 1.00kB done',
    '#1 sha256:layer 292.56kB done',
    '#1 sha256:layer 1.50MB / 3.40GB done',
  ]);
});
