import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import fs from 'node:fs';
import http2 from 'node:http2';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { after, before, test } from 'node:test';
import * as grpc from '@grpc/grpc-js';
import type { Metadata } from '../grpc/metadata.js';
import { encodeHeaders } from '../h2/hpack.js';
import { type MethodDefinition, type ServerCall, SessionServer } from './grpc-server.js';

// The session's gRPC server against the two HTTP/2 + gRPC implementations at hand (grpc-js's
// client, Node's HTTP/2 client) and against raw bytes; BuildKit's Go client is in test/.

const identity = (b: Buffer) => b;
const def = (p: string, streaming: boolean, responseStream = streaming): MethodDefinition => ({
  path: p,
  requestStream: streaming,
  responseStream,
  requestDeserialize: identity,
  responseSerialize: identity,
});
const WINDOW = 256 * 1024;

let dir: string;
let sock: string;
let listener: net.Server;
let client: grpc.Client;
const server = new SessionServer({ maxReceiveMessageBytes: 4 * 1024 * 1024, streamWindow: WINDOW });
const seen: { cancelled: number; metadata?: Metadata } = { cancelled: 0 };
const stalled: { resume?: () => void } = {};
/** Bytes the server has read off its connections. */
let received = 0;

before(async () => {
  server.addMethod(def('/t.T/Echo', false), (call, cb) => {
    seen.metadata = call.metadata;
    cb(null, Buffer.concat([Buffer.from('echo:'), call.request as Buffer]));
  });
  // Answers with the request's metadata, as JSON.
  server.addMethod(def('/t.T/Meta', false), (call, cb) => {
    const map = call.metadata.getMap();
    cb(
      null,
      Buffer.from(JSON.stringify(Object.fromEntries(Object.entries(map).map(([k, v]) => [k, [String(v)]])))),
    );
  });
  server.addMethod(def('/t.T/Throw', false), () => {
    throw new Error('a bug');
  });
  server.addMethod(def('/t.T/Fail', false), (_call, cb) =>
    cb({ code: grpc.status.NOT_FOUND, details: 'nö 100%' }),
  );
  // Bidi: answers each message with its sha256, then the total, after the client's end.
  server.addMethod(def('/t.T/Hash', true), (call: ServerCall) => {
    const total = createHash('sha256');
    call.on('data', (m: Buffer) => {
      total.update(m);
      call.write(createHash('sha256').update(m).digest());
    });
    call.on('end', () => {
      call.write(total.digest());
      call.end();
    });
  });
  // Server-streaming: `n` messages of 64 KiB with a counter, far more than the windows hold.
  server.addMethod(def('/t.T/Many', false, true), (call: ServerCall) => {
    const n = (call.request as Buffer).readUInt32BE(0);
    let i = 0;
    const more = () => {
      while (i < n) {
        const m = Buffer.alloc(64 * 1024, i % 256);
        m.writeUInt32BE(i++, 0);
        if (!call.write(m)) return void call.once('drain', more);
      }
      call.end();
    };
    more();
  });
  // Writes once, then fails: the status comes after what was written.
  server.addMethod(def('/t.T/Partial', false, true), (call: ServerCall) => {
    call.write(Buffer.from('first'));
    call.fail(grpc.status.UNAVAILABLE, 'gave up');
  });
  // Reads nothing until told: what the client can push meanwhile is the windows' worth.
  server.addMethod(def('/t.T/Stall', true), (call: ServerCall) => {
    call.pause();
    let bytes = 0;
    call.on('data', (m: Buffer) => {
      bytes += m.length;
    });
    call.on('end', () => {
      call.write(Buffer.from(String(bytes)));
      call.end();
    });
    stalled.resume = () => call.resume();
  });
  // Never answers: only a cancel ends it.
  server.addMethod(def('/t.T/Hang', true), (call: ServerCall) => {
    call.on('cancelled', () => seen.cancelled++);
  });
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'kiln-grpc-'));
  sock = path.join(dir, 's.sock');
  listener = net.createServer((s) => {
    s.on('data', (c: Buffer) => {
      received += c.length;
    });
    server.serve(s);
  });
  await new Promise<void>((resolve) => listener.listen(sock, resolve));
  client = new grpc.Client(`unix://${sock}`, grpc.credentials.createInsecure(), {
    'grpc.max_receive_message_length': -1,
  });
});

after(() => {
  client.close();
  server.close();
  listener.close();
  fs.rmSync(dir, { recursive: true, force: true });
});

function unary(method: string, req: Buffer, md = new grpc.Metadata()): Promise<Buffer> {
  return new Promise((resolve, reject) =>
    client.makeUnaryRequest(method, identity, identity, req, md, (err, res) =>
      err ? reject(err) : resolve(res as Buffer),
    ),
  );
}

test('unary calls: the answer, the metadata (text, repeated and binary), and an error status with its text', async () => {
  const md = new grpc.Metadata();
  md.add('dir-name', 'context');
  md.add('followpaths', 'a');
  md.add('followpaths', 'b');
  md.add('blob-bin', Buffer.from([0, 255, 1]));
  assert.equal((await unary('/t.T/Echo', Buffer.from('hi'), md)).toString(), 'echo:hi');
  assert.deepEqual(seen.metadata?.get('dir-name'), ['context']);
  assert.deepEqual(seen.metadata?.get('followpaths').map(String).join(', ').split(', '), ['a', 'b']);
  assert.deepEqual(seen.metadata?.get('blob-bin'), [Buffer.from([0, 255, 1])]);
  // An empty message is a message.
  assert.equal((await unary('/t.T/Echo', Buffer.alloc(0))).toString(), 'echo:');
  await assert.rejects(unary('/t.T/Fail', Buffer.alloc(0)), (err: grpc.ServiceError) => {
    assert.equal(err.code, grpc.status.NOT_FOUND);
    assert.equal(err.details, 'nö 100%');
    return true;
  });
  await assert.rejects(unary('/t.T/Nope', Buffer.alloc(0)), { code: grpc.status.UNIMPLEMENTED });
  // A handler that throws fails its call instead of leaving the caller waiting.
  await assert.rejects(unary('/t.T/Throw', Buffer.alloc(0)), {
    code: grpc.status.INTERNAL,
    details: "the session's /t.T/Throw handler failed: a bug",
  });
});

test('a bidi stream carries 24 MiB each way through windows of 256 KiB, byte-exact, with 8 calls at once', async () => {
  const one = () =>
    new Promise<void>((resolve, reject) => {
      const call = client.makeBidiStreamRequest('/t.T/Hash', identity, identity);
      const expected: Buffer[] = [];
      const total = createHash('sha256');
      const got: Buffer[] = [];
      call.on('data', (d: Buffer) => got.push(d));
      call.on('error', reject);
      call.on('status', (s: grpc.StatusObject) => {
        if (s.code !== grpc.status.OK) return reject(new Error(s.details));
        try {
          assert.deepEqual(got.slice(0, -1), expected);
          assert.deepEqual(got.at(-1), total.digest());
          resolve();
        } catch (err) {
          reject(err);
        }
      });
      // 3 MiB in sizes that straddle frames and windows: 1 byte to 1 MiB.
      const sizes = [1, 5, 16383, 16384, 16385, 65536, 1024 * 1024, 300_000, 7];
      let sent = 0;
      for (let r = 0; sent < 3 * 1024 * 1024; r++) {
        const m = randomBytes(sizes[r % sizes.length] as number);
        sent += m.length;
        expected.push(createHash('sha256').update(m).digest());
        total.update(m);
        call.write(m);
      }
      call.end();
    });
  await Promise.all(Array.from({ length: 8 }, one));
});

test('a server stream of 32 MiB waits on the client (flow control) and arrives whole and in order', async () => {
  const n = 512;
  const req = Buffer.alloc(4);
  req.writeUInt32BE(n, 0);
  const call = client.makeServerStreamRequest('/t.T/Many', identity, identity, req);
  let i = 0;
  for await (const m of call as AsyncIterable<Buffer>) {
    assert.equal(m.length, 64 * 1024);
    assert.equal(m.readUInt32BE(0), i);
    assert.equal(m[100], i % 256);
    i++;
    // A slow reader now and then: the server must hold back, not lose or reorder.
    if (i % 100 === 0) await new Promise((r) => setTimeout(r, 20));
  }
  assert.equal(i, n);
});

test('a handler that does not read holds the client to the stream window, then gets every byte', async () => {
  const call = client.makeBidiStreamRequest('/t.T/Stall', identity, identity);
  const answer = new Promise<string>((resolve, reject) => {
    call.on('data', (d: Buffer) => resolve(d.toString()));
    call.on('error', reject);
  });
  const start = received;
  const total = 8 * 1024 * 1024;
  for (let i = 0; i < total / 65536; i++) call.write(Buffer.alloc(65536, i));
  call.end();
  await new Promise((r) => setTimeout(r, 500));
  // The stream window (256 KiB) plus framing: nowhere near the 8 MiB the client wants to send.
  assert.ok(received - start < WINDOW + 64 * 1024, `read ${received - start} bytes while stalled`);
  stalled.resume?.();
  assert.equal(await answer, String(total));
});

test('fail() sends its status after the messages already written', async () => {
  const call = client.makeServerStreamRequest('/t.T/Partial', identity, identity, Buffer.alloc(0));
  const got: string[] = [];
  call.on('data', (d: Buffer) => got.push(d.toString()));
  call.on('error', () => undefined);
  const status = await new Promise<grpc.StatusObject>((resolve) => call.on('status', resolve));
  assert.deepEqual(got, ['first']);
  assert.equal(status.code, grpc.status.UNAVAILABLE);
  assert.equal(status.details, 'gave up');
});

test('a message over the limit fails the call with RESOURCE_EXHAUSTED; the connection serves on', async () => {
  await assert.rejects(unary('/t.T/Echo', Buffer.alloc(4 * 1024 * 1024 + 1)), {
    code: grpc.status.RESOURCE_EXHAUSTED,
  });
  assert.equal((await unary('/t.T/Echo', Buffer.from('ok'))).toString(), 'echo:ok');
});

test('a call the client cancels is told (cancelled), and the connection serves on', async () => {
  const before = seen.cancelled;
  const call = client.makeBidiStreamRequest('/t.T/Hang', identity, identity);
  call.on('error', () => undefined);
  call.write(Buffer.from('x'));
  await new Promise((r) => setTimeout(r, 100));
  call.cancel();
  const deadline = Date.now() + 10_000;
  while (seen.cancelled === before && Date.now() < deadline) await new Promise((r) => setTimeout(r, 10));
  assert.equal(seen.cancelled, before + 1);
  assert.equal((await unary('/t.T/Echo', Buffer.from('ok'))).toString(), 'echo:ok');
});

test("Node's HTTP/2 client sees the announced stream window and gets an answer", async () => {
  const session = http2.connect('http://session', { createConnection: () => net.connect(sock) });
  try {
    await new Promise<void>((resolve) => session.once('remoteSettings', () => resolve()));
    assert.equal(session.remoteSettings.initialWindowSize, WINDOW);
    const req = session.request({
      ':method': 'POST',
      ':path': '/t.T/Echo',
      'content-type': 'application/grpc',
      te: 'trailers',
    });
    req.end(Buffer.from([0, 0, 0, 0, 2, 0x68, 0x69]));
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    const trailers = await new Promise<http2.IncomingHttpHeaders>((resolve) => req.on('trailers', resolve));
    assert.equal(trailers['grpc-status'], '0');
    assert.equal(Buffer.concat(chunks).subarray(5).toString(), 'echo:hi');
  } finally {
    session.close();
  }
});

test("500 requests with random headers from Node's HTTP/2 client (Huffman, a dynamic table that evicts) decode exactly", async () => {
  const session = http2.connect('http://session', { createConnection: () => net.connect(sock) });
  // A seeded generator: a failure names the request that broke and can be replayed.
  let seed = 42;
  const rand = (n: number) => {
    seed = (seed * 1103515245 + 12345) % 2 ** 31;
    return seed % n;
  };
  const word = (min: number, max: number, alphabet: string) =>
    Array.from({ length: min + rand(max - min + 1) }, () => alphabet[rand(alphabet.length)]).join('');
  const printable = Array.from({ length: 0x7e - 0x21 + 1 }, (_, i) => String.fromCharCode(0x21 + i)).join('');
  try {
    for (let i = 0; i < 500; i++) {
      const sent: Record<string, string[]> = {};
      const headers: http2.OutgoingHttpHeaders = {
        ':method': 'POST',
        ':path': '/t.T/Meta',
        'content-type': 'application/grpc',
        te: 'trailers',
      };
      for (let h = rand(12); h >= 0; h--) {
        // Names repeat across requests (table hits) and values vary in length up to 600 bytes (evictions).
        const name = `x-${word(1, 3, 'abcdef')}`;
        const value = `${word(0, rand(4) === 0 ? 600 : 20, printable)}v`;
        sent[name] = [value];
        headers[name] = value;
      }
      const req = session.request(headers);
      req.end(Buffer.from([0, 0, 0, 0, 0]));
      const chunks: Buffer[] = [];
      req.on('data', (c: Buffer) => chunks.push(c));
      await new Promise((resolve) => req.on('end', resolve));
      const got = JSON.parse(Buffer.concat(chunks).subarray(5).toString()) as Record<string, string[]>;
      for (const k of Object.keys(got)) if (!k.startsWith('x-')) delete got[k];
      assert.deepEqual(got, sent, `request ${i}`);
    }
  } finally {
    session.close();
  }
});

/** Sends raw bytes on a new connection; resolves with what came back once the server closed it. */
function raw(bytes: Buffer): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const s = net.connect(sock);
    const got: Buffer[] = [];
    const timer = setTimeout(() => {
      s.destroy();
      reject(new Error('the server did not close the connection'));
    }, 10_000);
    s.on('data', (c: Buffer) => got.push(c));
    s.on('error', () => undefined);
    s.on('close', () => {
      clearTimeout(timer);
      resolve(Buffer.concat(got));
    });
    s.write(bytes);
  });
}

const PREFACE = Buffer.from('PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n', 'latin1');
function frame(type: number, flags: number, stream: number, payload: Buffer): Buffer {
  const h = Buffer.alloc(9);
  h.writeUIntBE(payload.length, 0, 3);
  h[3] = type;
  h[4] = flags;
  h.writeUInt32BE(stream, 5);
  return Buffer.concat([h, payload]);
}
/** The error code of the GOAWAY in what the server sent. */
function goawayCode(bytes: Buffer): number | undefined {
  let pos = 0;
  while (pos + 9 <= bytes.length) {
    const len = bytes.readUIntBE(pos, 3);
    if (bytes[pos + 3] === 7) return bytes.readUInt32BE(pos + 9 + 4);
    pos += 9 + len;
  }
  return undefined;
}

test('hostile peers get a GOAWAY with the right code and a closed connection, never a crash or a hang', async () => {
  const settings = frame(4, 0, 0, Buffer.alloc(0));
  // Not HTTP/2 at all.
  assert.equal(goawayCode(await raw(Buffer.from('GET / HTTP/1.1\r\nHost: x\r\n\r\n'))), 1);
  // A frame over the announced 16 KiB.
  assert.equal(
    goawayCode(await raw(Buffer.concat([PREFACE, settings, frame(0, 0, 1, Buffer.alloc(20000))]))),
    6,
  );
  // A header block that is not HPACK (index 0).
  assert.equal(
    goawayCode(await raw(Buffer.concat([PREFACE, settings, frame(1, 5, 1, Buffer.from([0x80]))]))),
    9,
  );
  // DATA on a stream never opened, HEADERS on stream 0, CONTINUATION out of the blue.
  assert.equal(
    goawayCode(await raw(Buffer.concat([PREFACE, settings, frame(0, 0, 3, Buffer.from('x'))]))),
    1,
  );
  assert.equal(
    goawayCode(await raw(Buffer.concat([PREFACE, settings, frame(1, 5, 0, Buffer.from([0x82]))]))),
    1,
  );
  assert.equal(
    goawayCode(await raw(Buffer.concat([PREFACE, settings, frame(9, 4, 1, Buffer.from([0x82]))]))),
    1,
  );
  // A header block that never ends: empty CONTINUATIONs, which add no bytes, count all the same.
  const endless = frame(9, 0, 1, Buffer.alloc(0));
  assert.equal(
    goawayCode(
      await raw(
        Buffer.concat([PREFACE, settings, frame(1, 0, 1, Buffer.from([0x82])), ...Array(2000).fill(endless)]),
      ),
    ),
    1,
  );
  // A window pushed past 2^31-1.
  const inc = Buffer.alloc(4);
  inc.writeUInt32BE(0x7fffffff, 0);
  assert.equal(goawayCode(await raw(Buffer.concat([PREFACE, settings, frame(8, 0, 0, inc)]))), 3);
  // The server still answers a well-behaved client.
  assert.equal((await unary('/t.T/Echo', Buffer.from('ok'))).toString(), 'echo:ok');
});

/** A request's HEADERS block for the handler that reads nothing until told. */
const STALL_HEADERS = encodeHeaders([
  [':method', 'POST'],
  [':scheme', 'http'],
  [':path', '/t.T/Stall'],
  [':authority', 'x'],
  ['content-type', 'application/grpc'],
]);

test('a peer that sends past the stream window gets the stream reset (FLOW_CONTROL_ERROR), nothing piles up', async () => {
  const s = net.connect(sock);
  const got: Buffer[] = [];
  s.on('data', (c: Buffer) => got.push(c));
  s.on('error', () => undefined);
  const headers = STALL_HEADERS;
  // The handler reads nothing: a peer that honoured the window would stop at 256 KiB.
  const chunk = frame(0, 0, 1, Buffer.alloc(16 * 1024));
  s.write(
    Buffer.concat([
      PREFACE,
      frame(4, 0, 0, Buffer.alloc(0)),
      frame(1, 4, 1, headers),
      ...Array(24).fill(chunk),
    ]),
  );
  const reset = () => {
    const bytes = Buffer.concat(got);
    for (let pos = 0; pos + 9 <= bytes.length; pos += 9 + bytes.readUIntBE(pos, 3)) {
      if (bytes[pos + 3] === 3 && bytes.readUInt32BE(pos + 5) === 1) return bytes.readUInt32BE(pos + 9);
    }
    return undefined;
  };
  try {
    for (let i = 0; reset() === undefined; i++) {
      assert.ok(i < 200, 'no RST_STREAM came');
      await new Promise((r) => setTimeout(r, 25));
    }
    assert.equal(reset(), 3);
  } finally {
    s.destroy();
  }
  assert.equal((await unary('/t.T/Echo', Buffer.from('ok'))).toString(), 'echo:ok');
});

test('what a handler has not read is held as the bytes the window let in: tiny messages do not pile up as objects', async () => {
  const s = net.connect(sock);
  s.on('error', () => undefined);
  const headers = STALL_HEADERS;
  // 16 streams, each sent a window's worth of empty messages (5 bytes each): 52,000 a stream.
  const empties = Buffer.alloc(16_380);
  const frames = [PREFACE, frame(4, 0, 0, Buffer.alloc(0))];
  for (let i = 0; i < 16; i++) {
    const id = 1 + 2 * i;
    frames.push(frame(1, 4, id, headers));
    for (let n = 0; n < Math.floor(WINDOW / empties.length); n++) frames.push(frame(0, 0, id, empties));
  }
  const bytes = Buffer.concat(frames);
  const start = received;
  const heapBefore = process.memoryUsage().heapUsed;
  try {
    s.write(bytes);
    // The server parses what it reads as it reads it.
    for (let i = 0; received - start < bytes.length; i++) {
      assert.ok(i < 400, `the server read ${received - start} of ${bytes.length} bytes`);
      await new Promise((r) => setTimeout(r, 25));
    }
    const grown = (process.memoryUsage().heapUsed - heapBefore) / (1024 * 1024);
    // Decoded ahead of the reader, the 830,000 messages took ~200 B of heap each.
    assert.ok(grown < 32, `the heap grew by ${grown.toFixed(1)} MiB`);
  } finally {
    s.destroy();
  }
});

test('a peer that asks for PING answers and reads none has its connection ended, not a growing queue', async () => {
  const s = net.connect(sock);
  s.on('error', () => undefined);
  // No 'data' listener: the socket is never read.
  const closed = new Promise<void>((resolve) => s.once('close', () => resolve()));
  let ended = false;
  void closed.then(() => {
    ended = true;
  });
  const ping = frame(6, 0, 0, Buffer.alloc(8));
  s.write(Buffer.concat([PREFACE, frame(4, 0, 0, Buffer.alloc(0))]));
  // 200,000 answers (3.4 MB) are far more than the socket buffers between us hold.
  const batch = Buffer.concat(Array(1000).fill(ping));
  for (let i = 0; i < 200 && !ended; i++) {
    if (!s.write(batch)) await new Promise((r) => s.once('drain', r).once('close', r));
  }
  const bound = new Promise<string>((r) => setTimeout(() => r('still open'), 10_000).unref());
  assert.equal(await Promise.race([closed.then(() => 'closed'), bound]), 'closed');
  assert.equal((await unary('/t.T/Echo', Buffer.from('ok'))).toString(), 'echo:ok');
});
