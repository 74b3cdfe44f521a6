import assert from 'node:assert/strict';
import type { Socket } from 'node:net';
import { PassThrough } from 'node:stream';
import { test } from 'node:test';
import { clientErrorHandler } from './errors.js';

/** What clientErrorHandler writes for a Node HTTP server error with this code. */
async function answerTo(code: string): Promise<{ status: string; body: unknown }> {
  const socket = new PassThrough();
  const written: Buffer[] = [];
  socket.on('data', (chunk: Buffer) => written.push(chunk));
  const ended = new Promise((resolve) => socket.on('end', resolve));
  clientErrorHandler(Object.assign(new Error(code), { code }), socket as unknown as Socket);
  await ended;
  const text = Buffer.concat(written).toString();
  const [head = '', body = ''] = text.split('\r\n\r\n');
  assert.match(head, /\r\nconnection: close/);
  return { status: head.split('\r\n')[0] ?? '', body: JSON.parse(body) };
}

test("Node's own request timeout is the API's 408 request_timeout", async () => {
  const { status, body } = await answerTo('ERR_HTTP_REQUEST_TIMEOUT');
  assert.equal(status, 'HTTP/1.1 408 Request Timeout');
  assert.deepEqual(body, {
    error: { code: 'request_timeout', message: 'the request was not received in time' },
  });
});

test('headers over the limit are a 431, other parser errors a 400, both invalid_request', async () => {
  const large = await answerTo('HPE_HEADER_OVERFLOW');
  assert.equal(large.status, 'HTTP/1.1 431 Request Header Fields Too Large');
  assert.deepEqual(large.body, {
    error: { code: 'invalid_request', message: 'the request headers are too large' },
  });
  const bad = await answerTo('HPE_INVALID_METHOD');
  assert.equal(bad.status, 'HTTP/1.1 400 Bad Request');
  assert.deepEqual(bad.body, {
    error: { code: 'invalid_request', message: 'the request is not valid HTTP (HPE_INVALID_METHOD)' },
  });
});
