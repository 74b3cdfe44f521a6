// postEvent against a receiver on loopback: refused addresses are refused before any connection
// (the refused ranges other than loopback are never dialled), a name is resolved once and the
// connection goes to that address with the name as Host, and nothing of an answer's body is kept.
import assert from 'node:assert/strict';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { after, before, describe, test } from 'node:test';
import { parseNetworks } from '@kiln/core';
import type { ResolvedAddress } from './pin-address.js';
import { type PostRequest, postEvent } from './post.js';

interface Seen {
  host: string | undefined;
  body: string;
}

describe('postEvent and the receiver address', () => {
  const seen: Seen[] = [];
  let server: http.Server;
  let port: number;
  before(async () => {
    server = http.createServer((req, res) => {
      const chunks: Buffer[] = [];
      req.on('data', (c: Buffer) => chunks.push(c));
      req.on('end', () => {
        seen.push({ host: req.headers.host, body: Buffer.concat(chunks).toString('utf8') });
        const status = req.url === '/fail' ? 500 : 200;
        res.writeHead(status).end(status === 200 ? 'ok' : 'db password is hunter2, stack trace follows');
      });
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    port = (server.address() as AddressInfo).port;
  });
  after(() => new Promise<void>((resolve) => server.close(() => resolve())));

  const loopback = parseNetworks('127.0.0.0/8');
  const post = (url: string, extra: Partial<PostRequest> = {}) =>
    postEvent({
      url,
      body: '{"id":"evt"}',
      secret: 'whsec_test',
      deliveryId: 'evt',
      timeoutMs: 5000,
      allowedNetworks: [],
      ...extra,
    });
  const resolver = (addresses: ResolvedAddress[]) => {
    const asked: string[] = [];
    const resolve = async (hostname: string) => {
      asked.push(hostname);
      return addresses;
    };
    return { asked, resolve };
  };

  test('literal special-purpose addresses are refused, nothing is sent', async () => {
    const before = seen.length;
    for (const [url, why] of [
      [`http://127.0.0.1:${port}/hook`, /127\.0\.0\.1 is a loopback address: refused, no request was made/],
      [`http://[::1]:${port}/hook`, /::1 is a loopback address/],
      [`http://[::ffff:127.0.0.1]:${port}/hook`, /loopback address \(IPv4-mapped\)/],
      ['http://10.0.0.1/hook', /10\.0\.0\.1 is a private address/],
      ['http://169.254.169.254/latest/meta-data/', /cloud metadata/],
      ['https://0x7f.1/hook', /127\.0\.0\.1 is a loopback/],
    ] as const) {
      const outcome = await post(url);
      assert.equal(outcome.ok, false, url);
      assert.equal(outcome.refused, true, url);
      assert.equal(outcome.statusCode, undefined, url);
      assert.match(outcome.error ?? '', why, url);
    }
    assert.equal(seen.length, before);
  });

  test('a name is refused when any of its addresses is, before connecting', async () => {
    const r = resolver([
      { address: '93.184.216.34', family: 4 },
      { address: '10.0.0.1', family: 4 },
    ]);
    const outcome = await post('http://receiver.test/hook', { resolve: r.resolve });
    assert.equal(outcome.refused, true);
    assert.match(outcome.error ?? '', /receiver\.test resolves to 10\.0\.0\.1, which is a private address/);
    assert.deepEqual(r.asked, ['receiver.test']);
  });

  test('localhost through the system resolver is refused', async () => {
    const before = seen.length;
    const outcome = await post(`http://localhost:${port}/hook`);
    assert.equal(outcome.refused, true);
    assert.match(
      outcome.error ?? '',
      /localhost resolves to (127\.0\.0\.1|::1), which is a loopback address/,
    );
    assert.equal(seen.length, before);
  });

  test('allowed: one look-up, the connection goes to that address with the name as Host', async () => {
    const r = resolver([{ address: '127.0.0.1', family: 4 }]);
    const before = seen.length;
    const outcome = await post(`http://receiver.test:${port}/hook`, {
      resolve: r.resolve,
      allowedNetworks: loopback,
    });
    assert.deepEqual(outcome, { ok: true, statusCode: 200 });
    assert.deepEqual(r.asked, ['receiver.test']);
    assert.deepEqual(seen.slice(before), [{ host: `receiver.test:${port}`, body: '{"id":"evt"}' }]);
  });

  test('a failed answer keeps its status and standard reason, not its body', async () => {
    const outcome = await post(`http://127.0.0.1:${port}/fail`, { allowedNetworks: loopback });
    assert.deepEqual(outcome, { ok: false, statusCode: 500, error: 'HTTP 500 Internal Server Error' });
  });

  test('no answer: the connection error, retryable', async () => {
    const closed = http.createServer();
    await new Promise<void>((resolve) => closed.listen(0, '127.0.0.1', resolve));
    const closedPort = (closed.address() as AddressInfo).port;
    await new Promise<void>((resolve) => closed.close(() => resolve()));
    const outcome = await post(`http://127.0.0.1:${closedPort}/`, { allowedNetworks: loopback });
    assert.equal(outcome.ok, false);
    assert.equal(outcome.refused, undefined);
    assert.match(outcome.error ?? '', /ECONNREFUSED/);
  });
});
