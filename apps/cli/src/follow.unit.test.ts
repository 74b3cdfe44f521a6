// Following a build log over server-sent events: the parser, and resuming after a dropped
// connection (after the last event's id, or by count from a replay) against a loopback HTTP server.
import assert from 'node:assert/strict';
import { createServer, type RequestListener, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { after, before, describe, mock, test } from 'node:test';
import { sendForever } from '../test/endless-answer.js';
import { KilnApi } from './api.js';
import { followLogs, followUntilFinal, MAX_SSE_EVENT_CHARS, parseSse } from './follow.js';

/** What a build answer must carry for the CLI to take it (api.ts BUILD). */
const VIEW = { id: 'B1', status: 'queued', spec: {}, createdAt: '2024-01-01T00:00:00.000Z', links: {} };

async function* chunks(text: string, size: number): AsyncGenerator<Uint8Array> {
  const bytes = Buffer.from(text);
  for (let i = 0; i < bytes.length; i += size) yield bytes.subarray(i, i + size);
}

async function collect(text: string, size: number) {
  const out = [];
  for await (const ev of parseSse(chunks(text, size))) out.push(ev);
  return out;
}

/** followUntilFinal of build b1 against a loopback server answering with `handler`, closed after. */
async function followOn(handler: RequestListener, opts: Parameters<typeof followUntilFinal>[2]) {
  const server = createServer(handler);
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  try {
    return await followUntilFinal(
      new KilnApi(`http://127.0.0.1:${(server.address() as AddressInfo).port}`, 't0ken'),
      'b1',
      opts,
    );
  } finally {
    server.closeAllConnections();
    await new Promise((resolve) => server.close(resolve));
  }
}

test('parseSse: events, multi-line data, comments, CRLF, split anywhere (even inside UTF-8)', async () => {
  const stream =
    ': keep-alive\n\nevent: log\ndata: #1 héllo\ndata: second line\n\nevent: log\r\ndata:no space\r\n\r\ndata: plain\n\nevent: end\ndata: succeeded\n\n';
  const expected = [
    { event: 'log', data: '#1 héllo\nsecond line' },
    { event: 'log', data: 'no space' },
    { event: 'message', data: 'plain' },
    { event: 'end', data: 'succeeded' },
  ];
  for (const size of [1, 2, 3, 7, 1000])
    assert.deepEqual(await collect(stream, size), expected, `chunks of ${size}`);
  // A last event without its blank line still counts.
  assert.deepEqual(await collect('event: end\ndata: failed', 4), [{ event: 'end', data: 'failed' }]);
});

describe('followLogs', () => {
  let server: Server;
  let base = '';
  let connections = 0;
  const events = ['#1 one\n', '#2 two\n', '#3 three\n', '#4 four\n'];
  const sse = (event: string, data: string) =>
    `event: ${event}\n${data
      .split('\n')
      .map((l) => `data: ${l}`)
      .join('\n')}\n\n`;

  before(async () => {
    server = createServer((req, res) => {
      if (req.headers.authorization !== 'Bearer t0ken') {
        res.writeHead(401, { 'content-type': 'application/json' });
        res.end(JSON.stringify({ error: { code: 'unauthorized', message: 'bad token' } }));
        return;
      }
      connections++;
      res.writeHead(200, { 'content-type': 'text/event-stream' });
      if (req.url === '/v1/builds/drop/logs' && connections === 1) {
        // Two events, then the connection dies mid-event.
        res.write(sse('log', events[0] as string) + sse('log', events[1] as string));
        res.write('event: log\ndata: #3 th');
        setTimeout(() => res.destroy(), 30);
        return;
      }
      if (req.url === '/v1/builds/drop/logs' && connections === 2) {
        // Ends without an end event: reconnect again.
        res.end(sse('log', events[0] as string));
        return;
      }
      res.end(`${events.map((e) => sse('log', e)).join('')}: keep-alive\n\n${sse('end', 'succeeded')}`);
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  });
  after(async () => {
    await new Promise((resolve) => server.close(resolve));
  });

  test('every log event once, in order, across dropped connections; resolves with the end status', async () => {
    connections = 0;
    const seen: string[] = [];
    const status = await followLogs(new KilnApi(base, 't0ken'), 'drop', {
      onLog: (t) => seen.push(t),
      retryDelayMs: 10,
    });
    assert.equal(status, 'succeeded');
    assert.deepEqual(seen, events);
    assert.equal(connections, 3);
  });

  test("resumes after the last event's id (Last-Event-ID): nothing lost when the replay starts later", async () => {
    // The first connection shows lines 1-5, then asks to reconnect; by then the server's stream
    // was trimmed, so a replay from its start begins at line 3.
    const lines = ['#1\n', '#2\n', '#3\n', '#4\n', '#5\n', '#6\n', '#7\n', '#8\n'];
    const withId = (i: number) => `id: 1-${i}\n${sse('log', lines[i] as string)}`;
    const asked: Array<string | undefined> = [];
    const trimmed = createServer((req, res) => {
      const last = req.headers['last-event-id'] as string | undefined;
      asked.push(last);
      res.writeHead(200, { 'content-type': 'text/event-stream' });
      if (asked.length === 1) {
        res.end(`${[0, 1, 2, 3, 4].map(withId).join('')}${sse('reconnect', 'max age')}`);
        return;
      }
      const from = last === undefined ? 2 : Number(last.split('-')[1]) + 1;
      const replay = [2, 3, 4, 5, 6, 7].filter((i) => i >= from);
      res.end(`${replay.map(withId).join('')}${sse('end', 'succeeded')}`);
    });
    await new Promise<void>((resolve) => trimmed.listen(0, '127.0.0.1', resolve));
    try {
      const seen: string[] = [];
      const url = `http://127.0.0.1:${(trimmed.address() as AddressInfo).port}`;
      const status = await followLogs(new KilnApi(url, 't0ken'), 'long', {
        onLog: (t) => seen.push(t),
        retryDelayMs: 5,
      });
      assert.equal(status, 'succeeded');
      assert.deepEqual(seen, lines);
      assert.deepEqual(asked, [undefined, '1-4']);
    } finally {
      await new Promise((resolve) => trimmed.close(resolve));
    }
  });

  test('an API error is not retried', async () => {
    await assert.rejects(followLogs(new KilnApi(base, 'wrong'), 'x', { onLog: () => {} }), {
      code: 'unauthorized',
      message: 'bad token',
    });
  });

  test('an unreachable server gives up after the retries, naming the build', async () => {
    const closed = createServer();
    await new Promise<void>((resolve) => closed.listen(0, '127.0.0.1', resolve));
    const port = (closed.address() as AddressInfo).port;
    await new Promise((resolve) => closed.close(resolve));
    await assert.rejects(
      followLogs(new KilnApi(`http://127.0.0.1:${port}`, 't0ken'), 'gone', {
        onLog: () => {},
        maxRetries: 2,
        retryDelayMs: 5,
      }),
      {
        code: 'log_stream_lost',
        message: /lost the log stream of build gone: cannot reach Kiln .*ECONNREFUSED/,
      },
    );
  });

  test('an abort stops it at once with the abort reason', async () => {
    const controller = new AbortController();
    controller.abort(new Error('stop'));
    await assert.rejects(
      followLogs(new KilnApi(base, 't0ken'), 'x', { onLog: () => {}, signal: controller.signal }),
      {
        message: 'stop',
      },
    );
  });
});

test('a lost log stream: the build is waited for as long as it runs, not 60 s, through failed polls', async () => {
  // Every log request fails (a proxy that cuts event streams); the build runs on. Each poll
  // moves the clock 61 s, so a bound of 60 s would give up at the second one.
  mock.timers.enable({ apis: ['Date'], now: Date.now() });
  let polls = 0;
  try {
    const lost: string[] = [];
    const done = await followOn(
      (req, res) => {
        res.setHeader('content-type', 'application/json');
        if (req.url === '/v1/builds/b1/logs') {
          // The per-project follower limit: retried like a 5xx, then the stream counts as lost.
          res.writeHead(429).end(JSON.stringify({ error: { code: 'rate_limited', message: 'try later' } }));
          return;
        }
        polls++;
        mock.timers.tick(61_000);
        // The API restarting: its first answers fail, the wait goes on through them.
        if (polls <= 2)
          res.writeHead(503).end(JSON.stringify({ error: { code: 'unavailable', message: 'restarting' } }));
        else res.end(JSON.stringify({ ...VIEW, status: polls < 6 ? 'running' : 'succeeded' }));
      },
      { onLog: () => {}, onLost: (err) => lost.push(err.message), maxRetries: 1, retryDelayMs: 1, pollMs: 1 },
    );
    assert.equal(done.status, 'succeeded');
    assert.equal(polls, 6);
    assert.deepEqual(lost, ['lost the log stream of build b1: try later']);
  } finally {
    mock.timers.reset();
  }
});

test('an API that stays down ends the wait after 10 minutes by the clock, however long each poll takes', async () => {
  mock.timers.enable({ apis: ['Date'], now: Date.now() });
  let polls = 0;
  try {
    await assert.rejects(
      followOn(
        (req, res) => {
          res.setHeader('content-type', 'application/json');
          if (req.url !== '/v1/builds/b1/logs') {
            polls++;
            // Each poll as slow as one against a hung API: a minute.
            mock.timers.tick(60_000);
          }
          res.writeHead(503).end(JSON.stringify({ error: { code: 'unavailable', message: 'down' } }));
        },
        { onLog: () => {}, onLost: () => {}, maxRetries: 1, retryDelayMs: 1, pollMs: 1 },
      ),
      { exitCode: 3 },
    );
    // The first failure starts the clock; ten minutes later the next one ends it.
    assert.equal(polls, 11);
  } finally {
    mock.timers.reset();
  }
});

test('a failed poll just after the log ended (an API restarting) does not fail the finished build', async () => {
  let polls = 0;
  const done = await followOn(
    (req, res) => {
      if (req.url === '/v1/builds/b1/logs') {
        res.writeHead(200, { 'content-type': 'text/event-stream' });
        res.end('event: end\ndata: succeeded\n\n');
        return;
      }
      polls++;
      res.setHeader('content-type', 'application/json');
      if (polls === 1)
        res.writeHead(502).end(JSON.stringify({ error: { code: 'unavailable', message: 'bad gateway' } }));
      else res.end(JSON.stringify({ ...VIEW, status: 'succeeded' }));
    },
    { onLog: () => {}, onLost: () => assert.fail('the stream was not lost'), pollMs: 1 },
  );
  assert.equal(done.status, 'succeeded');
  assert.equal(polls, 2);
});

test('an event that never ends (no line break, or data lines without the blank line) stops the parse', async () => {
  const MiB = 1024 * 1024;
  async function* endless(unit: string) {
    const chunk = Buffer.from(unit.repeat(MiB / unit.length));
    for (let sent = 0; sent <= 2 * MAX_SSE_EVENT_CHARS; sent += chunk.length) yield chunk;
  }
  const drain = async (body: AsyncIterable<Uint8Array>) => {
    for await (const _ of parseSse(body));
  };
  await assert.rejects(drain(endless('x')), /larger than 33554432 characters/);
  await assert.rejects(drain(endless('data: yyyyyyyyyyyyyyyyyyyyyyyyyy\n')), /larger than/);
});

test('a log event past the limit loses the stream at once (no reconnects), and the build is polled', async () => {
  let logRequests = 0;
  const lost: string[] = [];
  const done = await followOn(
    (req, res) => {
      if (req.url === '/v1/builds/b1/logs') {
        logRequests++;
        res.writeHead(200, { 'content-type': 'text/event-stream' });
        sendForever(res, 0x78);
        return;
      }
      res
        .writeHead(200, { 'content-type': 'application/json' })
        .end(JSON.stringify({ ...VIEW, status: 'succeeded' }));
    },
    { onLog: () => {}, onLost: (err) => lost.push(err.message), retryDelayMs: 1, pollMs: 1 },
  );
  assert.equal(done.status, 'succeeded');
  assert.equal(logRequests, 1);
  assert.match(lost[0] ?? '', /larger than 33554432 characters/);
});
