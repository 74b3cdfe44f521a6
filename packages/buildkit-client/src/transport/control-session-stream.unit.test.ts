// ControlSessionStream against an HTTP/2 server on loopback that answers Control.Session the
// way a daemon may: well, with an error status, or with what BuildKit never sends. Real
// daemons are covered by the solve, transports and fidelity suites; this is the protocol's edges.
import assert from 'node:assert/strict';
import { once } from 'node:events';
import http2 from 'node:http2';
import net from 'node:net';
import { after, test } from 'node:test';
import { bytesMessageHeader } from './bytes-message-framing.js';
import { ControlSessionError, ControlSessionStream } from './control-session-stream.js';

type Handler = (stream: http2.ServerHttp2Stream, headers: http2.IncomingHttpHeaders) => void;
let handler: Handler = () => undefined;
const server = http2.createServer();
server.on('stream', (stream, headers) => handler(stream, headers));
server.listen(0, '127.0.0.1');
await once(server, 'listening');
const { port } = server.address() as net.AddressInfo;
after(() => server.close());

const frame = (data: Buffer) => Buffer.concat([bytesMessageHeader(data.length), data]);

function open(headers: Array<[string, string]> = []): ControlSessionStream {
  return new ControlSessionStream(
    { connect: () => net.connect(port, '127.0.0.1'), origin: `http://127.0.0.1:${port}` },
    headers,
    1024 * 1024,
  );
}

/** Everything the stream yields, or the error it ends with. */
async function drain(s: ControlSessionStream): Promise<Buffer | Error> {
  const chunks: Buffer[] = [];
  try {
    for await (const c of s) chunks.push(c as Buffer);
    return Buffer.concat(chunks);
  } catch (err) {
    return err as Error;
  }
}

/** Splits a gRPC request body into its messages' bodies. */
function messages(body: Buffer): Buffer[] {
  const out: Buffer[] = [];
  for (let pos = 0; pos < body.length; ) {
    const len = body.readUInt32BE(pos + 1);
    out.push(body.subarray(pos + 5, pos + 5 + len));
    pos += 5 + len;
  }
  return out;
}

/** The data of a BytesMessage body: after the tag (0x0a) and the length varint. */
function payloadOf(body: Buffer): Buffer {
  assert.equal(body[0], 0x0a);
  let pos = 1;
  while ((body[pos++] as number) & 0x80);
  return body.subarray(pos);
}

test('bytes both ways, the session headers as metadata, a clean end on status 0', async () => {
  let seen: http2.IncomingHttpHeaders = {};
  const received: Buffer[] = [];
  handler = (stream, headers) => {
    seen = headers;
    stream.respond({ ':status': 200, 'content-type': 'application/grpc' }, { waitForTrailers: true });
    stream.on('data', (c: Buffer) => received.push(c));
    stream.on('end', () => {
      stream.write(frame(Buffer.from('hello ')));
      stream.end(frame(Buffer.from('client')));
    });
    stream.on('wantTrailers', () => stream.sendTrailers({ 'grpc-status': '0' }));
  };
  const s = open([
    ['X-Docker-Expose-Session-Uuid', 'abc'],
    ['X-Docker-Expose-Session-Grpc-Method', '/a/A'],
    ['X-Docker-Expose-Session-Grpc-Method', '/b/B'],
  ]);
  const big = Buffer.alloc(2.5 * 1024 * 1024, 7);
  s.write(big);
  s.end();
  assert.equal(String(await drain(s)), 'hello client');
  assert.equal(seen[':path'], '/moby.buildkit.v1.Control/Session');
  assert.equal(seen['content-type'], 'application/grpc');
  assert.equal(seen['x-docker-expose-session-uuid'], 'abc');
  assert.equal(seen['x-docker-expose-session-grpc-method'], '/a/A, /b/B');
  const sent = messages(Buffer.concat(received));
  // Coalesced into messages BuildKit accepts (its limit is 4 MiB), carrying the bytes in order.
  assert.ok(sent.length >= 3 && sent.every((m) => m.length <= 1024 * 1024 + 8), `${sent.length} messages`);
  assert.deepEqual(Buffer.concat(sent.map(payloadOf)), big);
});

test('an error status ends the stream with its code and message', async () => {
  handler = (stream) => {
    stream.respond({ ':status': 200, 'content-type': 'application/grpc' }, { waitForTrailers: true });
    stream.on('wantTrailers', () =>
      stream.sendTrailers({
        'grpc-status': '12',
        'grpc-message': encodeURIComponent('unknown method Session'),
      }),
    );
    stream.end();
  };
  const err = await drain(open());
  assert.ok(err instanceof ControlSessionError, String(err));
  assert.equal(err.code, 12);
  assert.match(err.message, /unknown method Session \(gRPC status 12\)/);
});

test('a grpc-message that is not valid percent-encoding is kept as it came, not thrown', async () => {
  handler = (stream) =>
    stream.respond(
      { ':status': 200, 'grpc-status': '13', 'grpc-message': 'session 100% broken' },
      { endStream: true },
    );
  assert.match(String(await drain(open())), /session 100% broken \(gRPC status 13\)/);
});

test('a trailers-only answer, an HTTP error and a missing status each fail the stream', async () => {
  handler = (stream) => stream.respond({ ':status': 200, 'grpc-status': '14' }, { endStream: true });
  assert.match(String(await drain(open())), /gRPC status 14/);
  handler = (stream) => stream.respond({ ':status': 415 }, { endStream: true });
  assert.match(String(await drain(open())), /HTTP 415/);
  handler = (stream) => {
    stream.respond({ ':status': 200 });
    stream.end(frame(Buffer.from('x')));
  };
  assert.match(String(await drain(open())), /without a gRPC status/);
});

test('what BuildKit never sends fails the stream instead of corrupting or hanging it', async () => {
  const cases: Array<[string, Buffer, RegExp]> = [
    ['another field', Buffer.from([0, 0, 0, 0, 3, 0x12, 1, 9]), /unexpected field tag 18/],
    ['a message over the limit', Buffer.from([0, 0, 0x20, 0, 0, 0x0a]), /exceeds the limit/],
    ['a stream cut inside a message', frame(Buffer.alloc(100)).subarray(0, 50), /ended inside a message/],
  ];
  for (const [what, bytes, expected] of cases) {
    handler = (stream) => {
      stream.respond({ ':status': 200, 'content-type': 'application/grpc' }, { waitForTrailers: true });
      stream.on('wantTrailers', () => stream.sendTrailers({ 'grpc-status': '0' }));
      stream.end(bytes);
    };
    const result = await drain(open());
    assert.ok(result instanceof Error, what);
    assert.match(result.message, expected, what);
  }
});

test('a daemon that is not there fails the stream', async () => {
  const closed = net.createServer();
  closed.listen(0, '127.0.0.1');
  await once(closed, 'listening');
  const { port: deadPort } = closed.address() as net.AddressInfo;
  closed.close();
  const s = new ControlSessionStream(
    { connect: () => net.connect(deadPort, '127.0.0.1'), origin: `http://127.0.0.1:${deadPort}` },
    [],
    1024,
  );
  assert.match(String(await drain(s)), /ECONNREFUSED/);
});
