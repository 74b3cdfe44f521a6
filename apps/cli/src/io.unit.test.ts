// The process's own streams: what happens when the reader of stdout goes away.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';

test('stdout closed by its reader (| head): a quiet exit 141, no stack trace', async () => {
  const module = fileURLToPath(new URL('./io.ts', import.meta.url));
  const child = spawn(
    process.execPath,
    [
      '--import',
      'tsx',
      '--input-type=module',
      '-e',
      `import { processIo } from ${JSON.stringify(module)};
      const io = processIo();
      for (;;) if (!io.stdout.write('x'.repeat(65536))) await new Promise((r) => io.stdout.once('drain', r));`,
    ],
    { stdio: ['ignore', 'pipe', 'pipe'], timeout: 20_000 },
  );
  let stderr = '';
  child.stderr.on('data', (d: Buffer) => {
    stderr += d.toString();
  });
  await once(child.stdout, 'data');
  child.stdout.destroy();
  const [code] = await once(child, 'exit');
  assert.equal(stderr, '');
  assert.equal(code, 141);
});
