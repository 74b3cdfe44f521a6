// What `kiln build` prints in each --progress mode, on a fake terminal and a pipe.
import assert from 'node:assert/strict';
import { Writable } from 'node:stream';
import { test } from 'node:test';
import type { BuildView } from './api.js';
import { CliError } from './errors.js';
import { createReporter, TtyReporter } from './reporter.js';

class Out extends Writable {
  text = '';
  constructor(
    readonly isTTY: boolean,
    readonly columns = 40,
  ) {
    super();
  }
  override _write(chunk: Buffer, _e: BufferEncoding, cb: () => void) {
    this.text += chunk.toString();
    cb();
  }
}

const build = (status: BuildView['status'], extra: Partial<BuildView> = {}): BuildView => ({
  id: 'B1',
  status,
  spec: {},
  source: 'api',
  context: { digest: 'sha256:x', size: 1 },
  git: null,
  attempts: 1,
  builder: null,
  platform: null,
  cached: false,
  cachedFrom: null,
  createdAt: '2024-01-01T00:00:00.000Z',
  startedAt: '2024-01-01T00:00:01.000Z',
  finishedAt: status === 'queued' ? null : '2024-01-01T00:00:03.500Z',
  links: { self: 'http://k/v1/builds/B1', logs: '', artifact: '', cancel: '' },
  ...extra,
});

test('auto picks the live view on a terminal and plain lines on a pipe', () => {
  assert.ok(createReporter('auto', new Out(true)) instanceof TtyReporter);
  assert.ok(!(createReporter('auto', new Out(false)) instanceof TtyReporter));
  assert.ok(createReporter('tty', new Out(false)) instanceof TtyReporter);
});

test('plain: the log verbatim, kiln lines always on a line of their own', () => {
  const out = new Out(false);
  const r = createReporter('plain', out);
  r.uploaded({ files: 2, bytes: 2048, sent: 300, compressed: true, ms: 120 });
  r.submitted(build('queued'));
  r.log('#1 step\n#1 partial');
  r.finished(build('failed', { error: { code: 'build_failed', message: 'boom' } }));
  r.error(new CliError('boom', 1, 'build_failed'));
  assert.equal(
    out.text,
    [
      'kiln: sent the build context: 2 files, 2.05kB (300B gzipped) in 0.1s',
      'kiln: build B1 queued',
      '#1 step',
      '#1 partial',
      'kiln: build B1 failed after 2.5s',
      'error: boom (build_failed)',
      '',
    ].join('\n'),
  );
});

test('json: one object per line, errors too', () => {
  const out = new Out(false);
  const r = createReporter('json', out);
  r.submitted(build('queued'));
  r.log('a\nb\n');
  r.error(new CliError('nope', 1, 'x'));
  const lines = out.text
    .trimEnd()
    .split('\n')
    .map((l) => JSON.parse(l) as Record<string, unknown>);
  assert.deepEqual(
    lines.map(({ time: _t, ...rest }) => rest),
    [
      { type: 'build', id: 'B1', status: 'queued', url: 'http://k/v1/builds/B1' },
      { type: 'log', id: 'B1', data: 'a\nb\n' },
      { type: 'error', code: 'x', message: 'nope', exitCode: 1 },
    ],
  );
});

test('quiet: errors only', () => {
  const out = new Out(false);
  const r = createReporter('quiet', out);
  r.submitted(build('queued'));
  r.log('noise\n');
  r.finished(build('succeeded'));
  r.error(new CliError('only this'));
  assert.equal(out.text, 'error: only this\n');
});

test('tty: progress rewrites one line, the live region is redrawn and erased, a failure leaves its log', () => {
  const out = new Out(true, 40);
  const r = createReporter('tty', out);
  r.uploadProgress({ read: 50, total: 100, sent: 10, compressed: true });
  assert.equal(out.text, '\r\x1b[2K[+] Sending build context 50%  50B / 1…');
  r.uploaded({ files: 1, bytes: 100, sent: 10, compressed: true, ms: 10 });
  assert.ok(out.text.endsWith('\r\x1b[2K[+] Sent build context: 1 files, 100B (10B gzipped) in 0.0s\n'));
  r.uploaded({ files: undefined, bytes: 2048, sent: 2048, compressed: true, ms: 10 });
  assert.ok(out.text.endsWith('[+] Sent build context from stdin: 2.05kB (gzip) in 0.0s\n'), out.text);
  out.text = '';
  r.submitted(build('queued'));
  r.log('#1 \x1b[31mred\x1b[0m step\n\n#2 second\n');
  r.finished(build('failed'));
  // The region (header + lines) is cleared with cursor-up + erase before the final lines.
  assert.ok(out.text.includes('\x1b[1F\x1b[J'), JSON.stringify(out.text));
  assert.ok(
    out.text.endsWith('#1 red step\n\n#2 second\n[+] Building 2.5s (failed)\n'),
    JSON.stringify(out.text),
  );
  r.close();
});

test('--progress plain shows a build log printable on a terminal, and as it is into a pipe', () => {
  const hostile = '#3 RUN echo\x1b]0;owned\x07\x1b[2Jdone\n';
  const tty = new Out(true);
  createReporter('plain', tty).log(hostile);
  assert.equal(tty.text, '#3 RUN echodone\n');
  const pipe = new Out(false);
  createReporter('plain', pipe).log(hostile);
  assert.equal(pipe.text, hostile);
});

test("the build lines quote the server's id and status without escapes, on a terminal or not", () => {
  for (const progress of ['tty', 'plain'] as const) {
    const out = new Out(progress === 'tty');
    const r = createReporter(progress, out);
    r.submitted(build('queued', { id: 'B1\x1b]0;pwned\x07\x1b[2J' }));
    r.canceling('B1\x1b]52;c;eA==\x07');
    assert.ok(
      !['\x1b]', '\x07', '\x1b[2J'].some((c) => out.text.includes(c)),
      `${progress}: ${JSON.stringify(out.text)}`,
    );
    assert.match(out.text, /B1/);
  }
});
