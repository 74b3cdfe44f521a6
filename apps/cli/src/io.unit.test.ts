// The process's own streams: what happens when the reader of stdout or stderr goes away.
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { closeSync, openSync } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import type { Readable } from 'node:stream';
import { test } from 'node:test';
import { moduleAt, spawnModule } from '../test/module-child.js';

/** A process writing to `stream` for ever through processIo(); stdout piped unless given. */
function writer(stream: 'stdout' | 'stderr', stdout: 'pipe' | number = 'pipe') {
  const child = spawnModule(
    `import { processIo } from ${moduleAt('./io.ts', import.meta.url)};
    const io = processIo();
    for (;;) if (!io.${stream}.write('x'.repeat(65536))) await new Promise((r) => io.${stream}.once('drain', r));`,
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

test('stderr closed during kiln build: the remote build is canceled, then a quiet exit 141', {
  timeout: 30_000,
}, async () => {
  const VIEW = { id: 'B1', status: 'running', spec: {}, createdAt: '2024-01-01T00:00:00.000Z', links: {} };
  const seen: string[] = [];
  const server = createServer((req, res) => {
    seen.push(`${req.method} ${req.url}`);
    req.resume();
    if (req.url === '/v1/builds/B1/logs') {
      // A build that logs for ever, until the client goes.
      res.writeHead(200, { 'content-type': 'text/event-stream' });
      let n = 0;
      const timer = setInterval(() => res.write(`id: ${++n}\nevent: log\ndata: line ${n}\n\n`), 5);
      res.on('close', () => clearInterval(timer));
      return;
    }
    const canceled = req.url === '/v1/builds/B1/cancel';
    res.writeHead(canceled ? 200 : 202, { 'content-type': 'application/json' });
    res.end(JSON.stringify({ ...VIEW, status: canceled ? 'canceled' : 'queued' }));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const ctx = await mkdtemp(path.join(tmpdir(), 'kiln-cli-pipe-'));
  try {
    await writeFile(path.join(ctx, 'Dockerfile'), 'FROM scratch\n');
    const child = spawnModule(
      `import { main, processIo } from ${moduleAt('./main.ts', import.meta.url)};
      process.exitCode = await main(${JSON.stringify(['build', '--progress', 'plain', '-o', `type=tar,dest=${ctx}/out.tar`, ctx])}, processIo());`,
      {
        env: {
          ...process.env,
          HOME: ctx,
          KILN_URL: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
          KILN_TOKEN: 'kiln_test',
        },
        stdio: ['ignore', 'ignore', 'pipe'],
        timeout: 25_000,
      },
    );
    const err = child.stderr as Readable;
    let said = '';
    err.on('data', (d: Buffer) => {
      said += d.toString();
      if (said.includes('line 3')) err.destroy();
    });
    const [code] = await once(child, 'exit');
    assert.equal(code, 141, said);
    assert.ok(seen.includes('POST /v1/builds/B1/cancel'), seen.join(', '));
  } finally {
    server.closeAllConnections();
    await new Promise((resolve) => server.close(resolve));
    await rm(ctx, { recursive: true, force: true });
  }
});
