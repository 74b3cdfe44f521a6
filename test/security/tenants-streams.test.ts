// Live log streams across API replicas, against real processes (two or three APIs and a worker as
// `run-app.sh` children, PostgreSQL, Redis, npm test's dockerd): the follower cap per project
// holds across replicas and frees a dead replica's places; a follower that does not read is
// dropped without the API growing; a stream at its maximum age ends and the client resumes from
// the last event it got (Last-Event-ID), losing and repeating nothing.
import assert from 'node:assert/strict';
import fs from 'node:fs/promises';
import net from 'node:net';
import { after, before, describe, test } from 'node:test';
import { bootstrapProject } from '../../apps/api/src/index.js';
import { freePort } from '../../packages/core/test-support/services.js';
import {
  type ApiClient,
  apiClient,
  busyboxContext,
  type KilnProcess,
  MiB,
  RUN,
  scriptDockerfile,
  serviceEnv,
  sleep,
  spawnApi,
  spawnWorker,
  startRedis,
  tgz,
} from '../support/processes.js';

const QUERY = 'output=type=tar,dest=out.tar&network=none&noCache=true';
const CAP = 4;

interface SseEvent {
  id?: string;
  event: string;
  data: string;
}

/** A raw follower on its own socket: `paused` reads nothing until resume(). */
interface Follower {
  status: Promise<number>;
  /** Everything received (headers included). */
  text(): string;
  /** The response ended (its last chunk came) or the server closed the connection. */
  closed: Promise<void>;
  resume(): void;
  close(): void;
}

function follow(
  base: string,
  path: string,
  token: string,
  opts: { paused?: boolean; lastEventId?: string } = {},
) {
  const { port } = new URL(base);
  const socket = net.connect(Number(port), '127.0.0.1');
  let body = '';
  let onStatus: (s: number) => void = () => undefined;
  const status = new Promise<number>((r) => {
    onStatus = r;
  });
  socket.setEncoding('latin1');
  socket.on('data', (c: string) => {
    body += c;
    const m = /^HTTP\/1\.1 (\d{3})/.exec(body);
    if (m) onStatus(Number(m[1]));
    // The last chunk of a chunked response: the stream is over (the socket itself is kept alive).
    if (body.endsWith('\r\n0\r\n\r\n')) socket.destroy();
  });
  const closed = new Promise<void>((r) => socket.on('close', () => r()));
  socket.on('error', () => undefined);
  socket.write(
    `GET ${path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: text/event-stream\r\nAuthorization: Bearer ${token}\r\n${
      opts.lastEventId ? `Last-Event-ID: ${opts.lastEventId}\r\n` : ''
    }\r\n`,
  );
  // A paused socket is read by nobody: the kernel buffers fill, then the API's.
  if (opts.paused) socket.pause();
  return {
    status,
    text: () => body,
    closed,
    resume: () => socket.resume(),
    close: () => socket.destroy(),
  } satisfies Follower;
}

/** The events of a chunked SSE body (chunk sizes removed by joining lines that are not fields). */
function eventsOf(raw: string): SseEvent[] {
  const body = Buffer.from(raw.slice(raw.indexOf('\r\n\r\n') + 4), 'latin1');
  // Undo chunked transfer encoding.
  let text = '';
  let i = 0;
  while (i < body.length) {
    const eol = body.indexOf('\r\n', i);
    if (eol === -1) break;
    const size = Number.parseInt(body.subarray(i, eol).toString('latin1'), 16);
    if (!size) break;
    text += body.subarray(eol + 2, eol + 2 + size).toString('utf8');
    i = eol + 2 + size + 2;
  }
  const out: SseEvent[] = [];
  let cur: { id?: string; event: string; data?: string[] } = { event: '' };
  for (const line of text.split('\n')) {
    if (line === '') {
      if (cur.data)
        out.push({
          ...(cur.id ? { id: cur.id } : {}),
          event: cur.event || 'message',
          data: cur.data.join('\n'),
        });
      cur = { event: '' };
    } else if (line.startsWith('id: ')) cur.id = line.slice(4);
    else if (line.startsWith('event: ')) cur.event = line.slice(7);
    else if (line.startsWith('data: ')) cur.data = [...(cur.data ?? []), line.slice(6)];
  }
  return out;
}

async function peakRssMiB(pid: number): Promise<number> {
  const status = await fs.readFile(`/proc/${pid}/status`, 'utf8');
  return Number(/VmHWM:\s+(\d+)/.exec(status)?.[1] ?? 0) / 1024;
}

/** Opens followers until one is admitted (places free asynchronously); the admitted one, or undefined. */
async function admittedWithin(open: () => Follower, ms: number): Promise<Follower | undefined> {
  const end = Date.now() + ms;
  while (Date.now() < end) {
    const f = open();
    if ((await f.status) === 200) return f;
    f.close();
    await sleep(250);
  }
  return undefined;
}

describe('live log streams across API replicas', { timeout: 600_000 }, () => {
  let env: Record<string, string>;
  let api1: KilnProcess & { base: string };
  let api2: KilnProcess & { base: string };
  let worker: KilnProcess;
  let token: string;
  let client: ApiClient;

  before(async () => {
    const redis = await startRedis();
    ({ env } = await serviceEnv(redis.url, {
      KILN_MAX_LOG_FOLLOWERS_PER_PROJECT: String(CAP),
      KILN_MAX_LOG_BYTES: String(32 * MiB),
      KILN_RATE_LIMIT_PER_MINUTE: '0',
    }));
    api1 = await spawnApi('api1', env, await freePort());
    api2 = await spawnApi('api2', env, await freePort());
    worker = spawnWorker('worker', env);
    token = await bootstrapProject(env.DATABASE_URL as string, 'streams');
    client = apiClient(api2.base, token);
  });
  after(async () => {
    await Promise.all([api1.stop(), api2.stop(), worker.stop()]);
  });

  test("the follower cap holds across two APIs, and a killed API's places free themselves", async () => {
    const ctx = await busyboxContext(scriptDockerfile('/bin/busybox sleep 120; /bin/busybox mkdir -p /out'));
    const build = await client.submit(await tgz(ctx.dir), QUERY);
    const path = `/v1/builds/${build.id}/logs`;
    const on = (api: { base: string }) => () => follow(api.base, path, token);
    const held = [on(api1)(), on(api1)(), on(api2)(), on(api2)()];
    assert.deepEqual(await Promise.all(held.map((f) => f.status)), [200, 200, 200, 200]);
    for (const api of [api1, api2]) {
      const over = on(api)();
      assert.equal(await over.status, 429, `a fifth follower on ${api.name}`);
      assert.match(over.text(), /rate_limited/);
      over.close();
    }
    // A place freed on one API is taken on the other.
    held[2]?.close();
    const again = await admittedWithin(on(api1), 10_000);
    assert.ok(again, 'the place freed on api2 was not given on api1');

    // api1 dies holding three places: api2 refuses until their entries expire (15 s TTL).
    await api1.kill();
    const killed = Date.now();
    assert.equal(await on(api2)().status, 429, 'the dead API still holds its places at first');
    const freed = await admittedWithin(on(api2), 45_000);
    const waited = (Date.now() - killed) / 1000;
    console.log(`  [streams] a killed API's follower places were free again after ${waited.toFixed(1)} s`);
    assert.ok(freed, "the killed API's places never freed");
    freed.close();
    for (const f of held) f.close();
    assert.equal((await client.api(`/v1/builds/${build.id}/cancel`, { method: 'POST' })).status, 202);
    api1 = await spawnApi('api1', env, await freePort());
  });

  test('a follower that reads nothing is dropped, and the API stays small', async () => {
    // BuildKit clips a step's output at about 1 MiB, so 16 steps print 1 MB each.
    const steps = Array.from({ length: 16 }, (_, i) =>
      RUN(`/bin/busybox yes kiln-slow-follower-${i} | /bin/busybox head -c 1000000`),
    );
    const ctx = await busyboxContext(
      ['FROM scratch', 'COPY busybox /bin/busybox', RUN('/bin/busybox sleep 2'), ...steps, ''].join('\n'),
    );
    const build = await client.submit(await tgz(ctx.dir), QUERY);
    const path = `/v1/builds/${build.id}/logs`;
    // (A paused socket delivers nothing, its status line included, until it is resumed.)
    const slow = follow(api2.base, path, token, { paused: true });
    const reader = follow(api2.base, path, token);
    assert.equal(await reader.status, 200);
    const done = await client.waitFor(build.id, ['succeeded', 'failed'], 240_000);
    assert.equal(done.status, 'succeeded');
    await reader.closed;
    const read = eventsOf(reader.text());
    assert.deepEqual(read.at(-1), { event: 'end', data: 'succeeded' });
    const rss = await peakRssMiB(api2.pid);
    // The dropped follower's socket is closed by the API: reading now ends early, without `end`.
    slow.resume();
    assert.equal(await slow.status, 200);
    await slow.closed;
    const got = eventsOf(slow.text());
    const bytes = (events: SseEvent[]) => events.reduce((n, e) => n + e.data.length, 0);
    console.log(
      `  [streams] slow follower: got ${(bytes(got) / MiB).toFixed(1)} of ${(bytes(read) / MiB).toFixed(1)} MiB before it was dropped; API peak RSS ${rss.toFixed(0)} MiB`,
    );
    // Cut off mid-log: no `end`, nor any other closing event (reconnect, revoked).
    assert.equal(got.at(-1)?.event, 'log', 'the follower that read nothing was kept to the end');
    assert.ok(rss < 250, `API peak RSS ${rss} MiB`);
  });

  test('a stream at its maximum age ends with reconnect; Last-Event-ID resumes it with nothing lost or repeated', async () => {
    const api3 = await spawnApi('api3', { ...env, KILN_MAX_LOG_STREAM_SECONDS: '2' }, await freePort());
    try {
      const ctx = await busyboxContext(
        scriptDockerfile(
          'for i in 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20; do echo age-line-$i; /bin/busybox sleep 0.3; done; /bin/busybox mkdir -p /out',
        ),
      );
      const build = await client.submit(await tgz(ctx.dir), QUERY);
      const started = Date.now();
      const path = `/v1/builds/${build.id}/logs`;
      const parts: SseEvent[][] = [];
      const took: string[] = [];
      let lastId: string | undefined;
      for (let i = 0; i < 20; i++) {
        const f = follow(api3.base, path, token, lastId ? { lastEventId: lastId } : {});
        assert.equal(await f.status, 200);
        await f.closed;
        const events = eventsOf(f.text());
        parts.push(events);
        took.push(((Date.now() - started) / 1000).toFixed(1));
        const ending = events.at(-1);
        if (ending?.event === 'end') break;
        assert.equal(ending?.event, 'reconnect', `stream ${i} ended with ${JSON.stringify(ending)}`);
        lastId = events.filter((e) => e.event === 'log').at(-1)?.id ?? lastId;
      }
      assert.ok(parts.length >= 2, 'no stream reached its maximum age');
      assert.equal(parts.at(-1)?.at(-1)?.event, 'end');
      const resumed = parts.flatMap((p) => p.filter((e) => e.event === 'log'));
      // One stream opened after the end, from the start of the live stream (Last-Event-ID 0-0),
      // replays the whole log: the pieces must add up to it.
      const whole = follow(api3.base, path, token, { lastEventId: '0-0' });
      await whole.closed;
      const full = eventsOf(whole.text()).filter((e) => e.event === 'log');
      assert.deepEqual(
        resumed.map((e) => e.id),
        full.map((e) => e.id),
      );
      assert.equal(resumed.map((e) => e.data).join('\n'), full.map((e) => e.data).join('\n'));
      assert.match(full.map((e) => e.data).join('\n'), /age-line-20/);
      // Without Last-Event-ID, a finished build's stored log comes whole (no ids): the same text.
      const stored = follow(api3.base, path, token);
      await stored.closed;
      const text = (events: SseEvent[]) =>
        events
          .filter((e) => e.event === 'log')
          .map((e) => e.data)
          .join('')
          .replace(/\n/g, '');
      assert.equal(text(eventsOf(stored.text())), text(full));
      console.log(
        `  [streams] max age 2 s: the log came in ${parts.length} streams (ended ${took.join(', ')} s after the POST), resumed by Last-Event-ID`,
      );
    } finally {
      await api3.stop();
    }
  });
});
