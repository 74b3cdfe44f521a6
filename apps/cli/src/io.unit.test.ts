// The process's own streams: what happens when the reader of stdout goes away.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { closeSync, openSync } from 'node:fs';
import type { Readable } from 'node:stream';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';

const module = fileURLToPath(new URL('./io.ts', import.meta.url));

/** A process writing to `stream` for ever through processIo(); stdout piped unless given. */
function writer(stream: 'stdout' | 'stderr', stdout: 'pipe' | number = 'pipe') {
  const child = spawn(
    process.execPath,
    [
      '--import',
      'tsx',
      '--input-type=module',
      '-e',
      `import { processIo } from ${JSON.stringify(module)};
      const io = processIo();
      for (;;) if (!io.${stream}.write('x'.repeat(65536))) await new Promise((r) => io.${stream}.once('drain', r));`,
    ],
    { stdio: ['ignore', stdout, 'pipe'], timeout: 20_000 },
  );
  return { child, out: child.stdout as Readable, err: child.stderr as Readable };
}

for (const [closed, how] of [
  ['stdout', '| head'],
  ['stderr', '2>&1 | head'],
] as const) {
  test(`${closed} closed by its reader (${how}): a quiet exit 141, no stack trace`, async () => {
    const { child, out, err } = writer(closed);
    const [gone, other] = closed === 'stdout' ? [out, err] : [err, out];
    let said = '';
    other.on('data', (d: Buffer) => {
      said += d.toString();
    });
    await once(gone, 'data');
    gone.destroy();
    const [code] = await once(child, 'exit');
    assert.equal(said, '');
    assert.equal(code, 141);
  });
}

test('stdout on a full disk (> /dev/full): exit 1 with one line saying so, no stack trace', async () => {
  const full = openSync('/dev/full', 'w');
  const { child, err } = writer('stdout', full);
  closeSync(full); // the child has its own
  let stderr = '';
  err.on('data', (d: Buffer) => {
    stderr += d.toString();
  });
  const [code] = await once(child, 'exit');
  assert.equal(code, 1);
  assert.match(stderr, /^kiln: writing to stdout failed: ENOSPC[^\n]*\n$/);
});
