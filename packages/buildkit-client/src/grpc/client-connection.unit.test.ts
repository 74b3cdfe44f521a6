// The gRPC client's protocol handling against Node's HTTP/2 server playing a daemon that
// misbehaves in each way gRPC defines an answer for. What BuildKit itself answers is tested
// against real daemons (test/solve.test.ts, test/transports.test.ts and the fidelity corpus).
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import fs from 'node:fs';
import http2 from 'node:http2';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { GrpcConnection } from './client-connection.js';
import { frameMessage } from './message-framing.js';
import { GrpcError, status } from './status.js';

const identity = (b: Buffer) => b;
const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'kiln-grpc-client-'));
const sock = path.join(dir, 'daemon.sock');
const seen: http2.IncomingHttpHeaders[] = [];

type Handler = (stream: http2.ServerHttp2Stream, body: Buffer) => void;
const ok = { ':status': 200, 'content-type': 'application/grpc' };
const handlers: Record<string, Handler> = {
  '/t/Echo': (s, body) => {
    s.respond(ok, { waitForTrailers: true });
    s.on('wantTrailers', () => s.sendTrailers({ 'grpc-status': '0' }));
    s.end(frameMessage(Buffer.concat([Buffer.from('echo:'), body.subarray(5)])));
  },
  // Three messages, the second split over two DATA frames.
  '/t/Many': (s) => {
    s.respond(ok, { waitForTrailers: true });
    s.on('wantTrailers', () => s.sendTrailers({ 'grpc-status': '0' }));
    const two = frameMessage(Buffer.from('two'));
    s.write(frameMessage(Buffer.from('one')));
    s.write(two.subarray(0, 4));
    s.write(two.subarray(4));
    s.end(frameMessage(Buffer.from('three')));
  },
  '/t/Fail': (s) => {
    s.respond(ok, { waitForTrailers: true });
    s.on('wantTrailers', () => s.sendTrailers({ 'grpc-status': '5', 'grpc-message': 'n%C3%B6 100%25' }));
    s.end();
  },
  '/t/TrailersOnly': (s) =>
    s.respond({ ...ok, 'grpc-status': '12', 'grpc-message': 'unknown service' }, { endStream: true }),
  '/t/Http503': (s) => s.respond({ ':status': 503 }, { endStream: true }),
  '/t/NotGrpc': (s) => {
    s.respond({ ':status': 200, 'content-type': 'text/html' });
    s.end('<html>');
  },
  '/t/NoStatus': (s) => {
    s.respond(ok);
    s.end(frameMessage(Buffer.from('x')));
  },
  '/t/TwoForUnary': (s) => {
    s.respond(ok, { waitForTrailers: true });
    s.on('wantTrailers', () => s.sendTrailers({ 'grpc-status': '0' }));
    s.end(Buffer.concat([frameMessage(Buffer.from('a')), frameMessage(Buffer.from('b'))]));
  },
  '/t/Cut': (s) => {
    s.respond(ok, { waitForTrailers: true });
    s.on('wantTrailers', () => s.sendTrailers({ 'grpc-status': '0' }));
    s.end(frameMessage(Buffer.from('whole')).subarray(0, 7));
  },
  '/t/Big': (s) => {
    s.respond(ok);
    s.write(frameMessage(Buffer.alloc(2048)));
  },
  '/t/Refused': (s) => s.close(http2.constants.NGHTTP2_REFUSED_STREAM),
  '/t/Calm': (s) => s.close(http2.constants.NGHTTP2_ENHANCE_YOUR_CALM),
  // Answers after a while, when nothing in the calling process but the call is waiting.
  '/t/Slow': (s, body) =>
    setTimeout(() => {
      s.respond(ok, { waitForTrailers: true });
      s.on('wantTrailers', () => s.sendTrailers({ 'grpc-status': '0' }));
      s.end(frameMessage(Buffer.concat([Buffer.from('slow:'), body.subarray(5)])));
    }, 300),
  // Answers nothing until the client gives up.
  '/t/Hang': (s) => s.respond(ok),
  '/t/Drop': (s) => s.session?.destroy(),
};

let server: http2.Http2Server;
const sessions = new Set<http2.ServerHttp2Session>();
function listen(): Promise<void> {
  server = http2.createServer();
  server.on('session', (s) => {
    sessions.add(s);
    s.on('close', () => sessions.delete(s));
  });
  server.on('stream', (stream, headers) => {
    seen.push(headers);
    const parts: Buffer[] = [];
    stream.on('data', (c: Buffer) => parts.push(c));
    stream.on('end', () => handlers[String(headers[':path'])]?.(stream, Buffer.concat(parts)));
    stream.on('error', () => undefined);
  });
  fs.rmSync(sock, { force: true });
  return new Promise((resolve) => server.listen(sock, resolve));
}
/** Stops the daemon: the listener and every connection to it. */
function stop(): Promise<void> {
  for (const s of sessions) s.destroy();
  return new Promise((resolve) => server.close(() => resolve()));
}

let conn: GrpcConnection;
before(async () => {
  await listen();
  conn = new GrpcConnection(
    { connect: () => net.connect(sock), origin: 'http://localhost' },
    { maxReceiveMessageBytes: 1024, windowBytes: 1 << 20 },
  );
  await conn.ready(Date.now() + 5000);
});
after(async () => {
  conn.close();
  await stop();
  fs.rmSync(dir, { recursive: true, force: true });
});

const unary = (method: string, body = 'hi', md: Record<string, string> = {}) =>
  conn.unary(
    `/t/${method}`,
    (s: string) => Buffer.from(s),
    (b) => b.toString(),
    body,
    md,
  ).response;

function rejectsWith(
  promise: Promise<unknown>,
  code: number,
  details: RegExp | string,
  sentByPeer?: boolean,
): Promise<void> {
  return assert.rejects(promise, (err: unknown) => {
    assert.ok(err instanceof GrpcError, String(err));
    assert.equal(err.code, code, err.message);
    if (sentByPeer !== undefined) assert.equal(err.sentByPeer, sentByPeer, err.message);
    if (typeof details === 'string') assert.equal(err.details, details);
    else assert.match(err.details, details);
    return true;
  });
}

test('a unary call sends the gRPC request headers and its metadata, and reads the one answer', async () => {
  assert.equal(await unary('Echo', 'hi', { traceparent: '00-abc-def-01', 'X-Upper': 'v' }), 'echo:hi');
  const h = seen.at(-1) as http2.IncomingHttpHeaders;
  assert.equal(h[':method'], 'POST');
  assert.equal(h['content-type'], 'application/grpc');
  assert.equal(h.te, 'trailers');
  assert.equal(h.traceparent, '00-abc-def-01');
  assert.equal(h['x-upper'], 'v');
  assert.equal(await unary('Echo', ''), 'echo:');
});

test('a server stream yields each message in order, however the frames split them', async () => {
  const got: string[] = [];
  for await (const m of conn.serverStream('/t/Many', identity, (b) => b.toString(), Buffer.alloc(0)))
    got.push(m as string);
  assert.deepEqual(got, ['one', 'two', 'three']);
});

test('a status in the trailers, or alone in the headers, fails the call with its code and decoded text', async () => {
  await rejectsWith(unary('Fail'), status.NOT_FOUND, 'nö 100%', true);
  await rejectsWith(unary('TrailersOnly'), status.UNIMPLEMENTED, 'unknown service', true);
});

test('answers that are not gRPC fail with the code gRPC maps them to, as no status the daemon sent', async () => {
  await rejectsWith(unary('Http503'), status.UNAVAILABLE, 'the daemon answered HTTP 503', false);
  await rejectsWith(unary('NotGrpc'), status.UNKNOWN, /content-type "text\/html"/, false);
  await rejectsWith(unary('NoStatus'), status.INTERNAL, /without a gRPC status/, false);
  await rejectsWith(unary('TwoForUnary'), status.INTERNAL, /answered 2 messages/, false);
  await rejectsWith(unary('Cut'), status.INTERNAL, /inside a message/, false);
  await rejectsWith(unary('Refused'), status.UNAVAILABLE, /reset the stream/, false);
  await rejectsWith(unary('Calm'), status.RESOURCE_EXHAUSTED, /reset the stream/, false);
});

test('a message over the limit fails the call (RESOURCE_EXHAUSTED) and the connection serves on', async () => {
  await rejectsWith(unary('Big'), status.RESOURCE_EXHAUSTED, /2048 bytes exceeds the limit of 1024/);
  assert.equal(await unary('Echo', 'after'), 'echo:after');
});

test('cancel() ends a call at once with CANCELLED; other calls go on', async () => {
  const call = conn.unary(
    '/t/Hang',
    (s: string) => Buffer.from(s),
    (b) => b.toString(),
    'x',
  );
  setTimeout(() => call.cancel(), 50);
  await rejectsWith(call.response, status.CANCELLED, 'cancelled on the client');
  assert.equal(await unary('Echo', 'still'), 'echo:still');
});

test('a lost connection fails its calls with UNAVAILABLE, and the next call dials again', async () => {
  await rejectsWith(unary('Drop'), status.UNAVAILABLE, /.+/);
  assert.equal(await unary('Echo', 'redialed'), 'echo:redialed');
  // A daemon restarted between calls is reached by the next one.
  await stop();
  const pending = unary('Echo', 'during');
  await assert.rejects(
    pending,
    (err: unknown) => err instanceof GrpcError && err.code === status.UNAVAILABLE,
  );
  await listen();
  await conn.ready(Date.now() + 5000);
  assert.equal(await unary('Echo', 'restarted'), 'echo:restarted');
});

test('ready() fails with the reason once the deadline passes: nothing listening, or a peer that is not HTTP/2', async () => {
  const nothing = new GrpcConnection(
    { connect: () => net.connect(path.join(dir, 'absent.sock')), origin: 'http://localhost' },
    { maxReceiveMessageBytes: 1024, windowBytes: 1 << 16 },
  );
  const t0 = Date.now();
  await rejectsWith(nothing.ready(Date.now() + 500), status.UNAVAILABLE, /ENOENT/);
  assert.ok(Date.now() - t0 < 5000, 'gave up near the deadline');
  nothing.close();

  // Accepts, then says nothing an HTTP/2 client could take for SETTINGS.
  const accepted: net.Socket[] = [];
  const mute = net.createServer((s) => {
    accepted.push(s);
    s.on('error', () => undefined);
  });
  const muteSock = path.join(dir, 'mute.sock');
  await new Promise<void>((resolve) => mute.listen(muteSock, resolve));
  const silent = new GrpcConnection(
    { connect: () => net.connect(muteSock), origin: 'http://localhost' },
    { maxReceiveMessageBytes: 1024, windowBytes: 1 << 16 },
  );
  await rejectsWith(
    silent.ready(Date.now() + 300),
    status.UNAVAILABLE,
    /no HTTP\/2 answer before the deadline/,
  );
  silent.close();
  for (const s of accepted) s.destroy();
  await new Promise<void>((resolve) => mute.close(() => resolve()));
});

test('a closed connection refuses calls instead of dialing again', async () => {
  const c = new GrpcConnection(
    { connect: () => net.connect(sock), origin: 'http://localhost' },
    { maxReceiveMessageBytes: 1024, windowBytes: 1 << 16 },
  );
  await c.ready(Date.now() + 5000);
  c.close();
  await rejectsWith(c.ready(Date.now() + 1000), status.UNAVAILABLE, 'the connection is closed');
  const call = c.unary(
    '/t/Echo',
    (s: string) => Buffer.from(s),
    (b) => b.toString(),
    'x',
  );
  await assert.rejects(
    call.response,
    (err: unknown) => err instanceof GrpcError && err.code === status.UNAVAILABLE,
  );
});

test('a connection holds the process open while a call is in progress, and not after: a program that forgets close() exits', async () => {
  const script = path.join(dir, 'forgets-close.mts');
  const module = fileURLToPath(new URL('./client-connection.ts', import.meta.url));
  fs.writeFileSync(
    script,
    `import net from 'node:net';
import { GrpcConnection } from ${JSON.stringify(module)};
const conn = new GrpcConnection({ connect: () => net.connect(${JSON.stringify(sock)}), origin: 'http://localhost' },
  { maxReceiveMessageBytes: 1024, windowBytes: 1 << 16 });
await conn.ready(Date.now() + 5000);
const answer = await conn.unary('/t/Slow', (s) => Buffer.from(s), (b) => b.toString(), 'x').response;
console.log(answer);
`,
  );
  const { stdout } = await new Promise<{ stdout: string }>((resolve, reject) => {
    const child = execFile(process.execPath, ['--import', 'tsx', script], { timeout: 20_000 }, (err, out) =>
      err ? reject(err) : resolve({ stdout: out }),
    );
    child.stdin?.end();
  });
  // The answer came 300 ms after the call with nothing else keeping the process alive, and the
  // process then ended by itself with the connection still open.
  assert.equal(stdout.trim(), 'slow:x');
});

test('keepalive: a daemon that stops answering PINGs fails the calls in progress with UNAVAILABLE; one that answers keeps them', async () => {
  const keepalive = { intervalMs: 50, timeoutMs: 150 };
  const answering = new GrpcConnection(
    { connect: () => net.connect(sock), origin: 'http://localhost' },
    { maxReceiveMessageBytes: 1024, windowBytes: 1 << 20, keepalive },
  );
  try {
    // Six PINGs go out and are answered while the call waits for its answer.
    const slow = answering.unary(
      '/t/Slow',
      (s: string) => Buffer.from(s),
      (b) => b.toString(),
      'x',
    );
    assert.equal(await slow.response, 'slow:x');
    // Each call after an idle spell starts the pings again, on the same connection, and adds nothing to it.
    const session = (answering as unknown as { h2: http2.ClientHttp2Session }).h2;
    const listeners = session.listenerCount('close');
    for (let i = 0; i < 20; i++)
      await answering.unary(
        '/t/Echo',
        (s: string) => Buffer.from(s),
        (b) => b.toString(),
        'y',
      ).response;
    assert.equal(session.listenerCount('close'), listeners);
  } finally {
    answering.close();
  }

  // A peer that sends its SETTINGS, then reads everything and answers nothing: a frozen daemon.
  const frozenSock = path.join(dir, 'frozen.sock');
  const frozen = net.createServer((socket) => {
    socket.write(Buffer.from([0, 0, 0, 4, 0, 0, 0, 0, 0]));
    socket.on('data', () => undefined);
    socket.on('error', () => undefined);
  });
  await new Promise<void>((resolve) => frozen.listen(frozenSock, resolve));
  const silent = new GrpcConnection(
    { connect: () => net.connect(frozenSock), origin: 'http://localhost' },
    { maxReceiveMessageBytes: 1024, windowBytes: 1 << 20, keepalive },
  );
  try {
    await silent.ready(Date.now() + 5000);
    const call = silent.unary(
      '/t/Hang',
      (s: string) => Buffer.from(s),
      (b) => b.toString(),
      'x',
    );
    await rejectsWith(call.response, status.UNAVAILABLE, /did not answer an HTTP\/2 PING within 150 ms/);
  } finally {
    silent.close();
    await new Promise((resolve) => frozen.close(resolve));
  }
});
