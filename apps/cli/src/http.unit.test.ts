// The CLI's HTTP client against loopback servers: bodies both ways, a server that goes silent,
// TLS that does not verify, and a process that ends without closing its kept-alive connection.
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import { createServer as createTlsServer } from 'node:https';
import type { AddressInfo } from 'node:net';
import { after, before, describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { makeTestPki } from '../../../packages/buildkit-client/test-support/pki.js';
import { request } from './http.js';

const listen = async (server: Server) => {
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return `127.0.0.1:${(server.address() as AddressInfo).port}`;
};
const close = async (server: Server) => {
  server.closeAllConnections();
  await new Promise((resolve) => server.close(resolve));
};

describe('request', () => {
  let server: Server;
  let base = '';
  before(async () => {
    server = createServer(async (req, res) => {
      if (req.url === '/silent') return; // answers nothing, keeps the connection
      if (req.url === '/stall') {
        res.writeHead(200);
        res.write('first bytes');
        return; // the rest never comes
      }
      let length = 0;
      for await (const chunk of req) length += (chunk as Buffer).length;
      res.writeHead(201, 'Made', {
        'x-seen': req.headers['x-kind'] ?? '',
        'content-type': 'application/json',
      });
      res.end(
        JSON.stringify({ method: req.method, length, chunked: req.headers['transfer-encoding'] ?? null }),
      );
    });
    base = `http://${await listen(server)}`;
  });
  after(() => close(server));

  test('a text body is sent with its length, a stream chunked; the answer as it came', async () => {
    const text = await request(`${base}/x`, { method: 'PUT', headers: { 'x-kind': 'text' }, body: 'héllo' });
    assert.deepEqual(
      [text.status, text.statusText, text.ok, text.header('X-Seen')],
      [201, 'Made', true, 'text'],
    );
    assert.deepEqual(JSON.parse(await text.text()), { method: 'PUT', length: 6, chunked: null });

    async function* parts() {
      for (let i = 0; i < 4; i++) yield Buffer.alloc(100_000, i);
    }
    const streamed = await request(`${base}/x`, { method: 'POST', body: parts() });
    assert.deepEqual(JSON.parse(await streamed.text()), {
      method: 'POST',
      length: 400_000,
      chunked: 'chunked',
    });
  });

  test('a server that goes silent, before or during its answer, fails the request instead of hanging', async () => {
    const host = new URL(base).host;
    await assert.rejects(request(`${base}/silent`, { idleTimeoutMs: 200 }), {
      message: `${host} sent nothing for 0.2 s`,
    });
    const res = await request(`${base}/stall`, { idleTimeoutMs: 200 });
    assert.equal(res.status, 200);
    // The reader learns why, not only that the connection was torn ("aborted").
    await assert.rejects(res.text(), { message: `${host} sent nothing for 0.2 s` });
  });

  test('a refused connection and a foreign scheme are errors that say so', async () => {
    const gone = createServer();
    const address = await listen(gone);
    await close(gone);
    await assert.rejects(request(`http://${address}/`), { message: `connect ECONNREFUSED ${address}` });
    await assert.rejects(request('ftp://127.0.0.1/x'), {
      message: 'unsupported URL scheme ftp: in ftp://127.0.0.1/x',
    });
  });

  test('an abort rejects with the abort', async () => {
    const controller = new AbortController();
    const pending = request(`${base}/silent`, { signal: controller.signal });
    controller.abort();
    await assert.rejects(pending, { name: 'AbortError' });
  });
});

test('https is TLS with verification: a certificate from an unknown CA is refused, naming why', async () => {
  const pki = makeTestPki();
  const server = createTlsServer(
    { key: readFileSync(pki.serverKey), cert: readFileSync(pki.serverCert) },
    (_, res) => res.end('should not be reached'),
  );
  try {
    const address = await listen(server);
    await assert.rejects(request(`https://${address}/`), /certificate/);
  } finally {
    await close(server);
    pki.cleanup();
  }
});

describe('a process exits by itself after its requests, with the server keeping connections open', () => {
  let server: Server;
  let address = '';
  before(async () => {
    server = createServer((req, res) => {
      if (req.url === '/empty') return res.writeHead(204).end();
      // Refuses a streamed body before reading it, and keeps the connection.
      if (req.url === '/early') return res.writeHead(400).end('refused');
      res.end('ok');
    });
    // Longer than a child may take: only the client can end a connection in time.
    server.keepAliveTimeout = 120_000;
    address = await listen(server);
  });
  after(() => close(server));

  const module = fileURLToPath(new URL('./http.ts', import.meta.url));
  /** Runs `body` as a module with `request` imported; bounded only to prove it ends. */
  const run = async (body: string) =>
    (
      await promisify(execFile)(
        process.execPath,
        [
          '--import',
          'tsx',
          '--input-type=module',
          '-e',
          `import { Readable } from 'node:stream';\nimport { request } from ${JSON.stringify(module)};\n${body}`,
        ],
        { timeout: 20_000 },
      )
    ).stdout;

  test('an answer that was read', async () => {
    const out = await run(
      `const res = await request('http://${address}/');\nconsole.log(res.status, await res.text());`,
    );
    assert.equal(out, '200 ok\n');
  });

  test('an empty answer (204) that was not read', async () => {
    const out = await run(
      `console.log((await request('http://${address}/empty', { method: 'DELETE' })).status);`,
    );
    assert.equal(out, '204\n');
  });

  test('a streamed body refused early, which its owner then stops', async () => {
    const out = await run(`const body = new Readable({ read() {} });
      body.push(Buffer.alloc(65536, 1));
      const res = await request('http://${address}/early', { method: 'POST', body });
      console.log(res.status, await res.text());
      body.destroy();`);
    assert.equal(out, '400 refused\n');
  });
});
