// Bounded logs and streams, against real processes: the API and a worker as `run-app.sh`
// children on a private Redis (so its INFO is theirs alone), building on `npm test`'s dockerd.
// A build printing 20 MiB keeps Redis, the worker and the API small and its logs end at the
// budget with the truncation marker; hundreds of idle followers share one Redis reader, are
// capped per project, end when their token is revoked; build output cannot forge SSE events.
import assert from 'node:assert/strict';
import fs from 'node:fs/promises';
import http from 'node:http';
import { describe, test } from 'node:test';
import { bootstrapProject } from '../../apps/api/src/index.js';
import { freePort } from '../../packages/core/test-support/services.js';
import {
  apiClient,
  busyboxContext,
  MiB,
  RESULT_DOCKERFILE,
  scriptDockerfile,
  serviceEnv,
  spawnApi,
  spawnWorker,
  startRedis,
  tgz,
  withOutputOnFailure,
} from '../support/processes.js';

const KiB = 1024;
const BUDGET = 256 * KiB;
/** Kiln's own closing lines may go this far past the budget (TAIL_BYTES in build-log.ts). */
const TAIL = 16 * KiB;
const MARKER = '[kiln: log truncated after 256 KiB; the build goes on]';
const FOLLOWERS = 500;
const QUERY = 'output=type=tar,dest=out.tar&network=none';

interface Sse {
  status: number;
  /** Everything received so far. */
  text(): string;
  /** Resolves with the whole body once the server ends the response. */
  ended: Promise<string>;
  close(): void;
}

/** GET with `Accept: text/event-stream` on a socket of its own; resolves once the headers are in. */
function openSse(base: string, path: string, token: string): Promise<Sse> {
  return new Promise((resolve, reject) => {
    const req = http.get(
      `${base}${path}`,
      { agent: false, headers: { accept: 'text/event-stream', authorization: `Bearer ${token}` } },
      (res) => {
        let body = '';
        res.setEncoding('utf8');
        res.on('data', (c: string) => {
          body += c;
        });
        const ended = new Promise<string>((r) => {
          res.on('end', () => r(body));
          res.on('close', () => r(body));
          res.on('error', () => r(body));
        });
        resolve({ status: res.statusCode ?? 0, text: () => body, ended, close: () => req.destroy() });
      },
    );
    req.on('error', reject);
  });
}

/** Events as a browser reads them: CR, LF and CRLF all end a line. */
function parseSse(text: string): Array<{ event: string; data: string }> {
  const out: Array<{ event: string; data: string }> = [];
  let event = '';
  let data: string[] | undefined;
  for (const line of text.split(/\r\n|\r|\n/)) {
    if (line === '') {
      if (data) out.push({ event: event || 'message', data: data.join('\n') });
      event = '';
      data = undefined;
    } else if (line.startsWith('event:')) event = line.slice(6).trim();
    else if (line.startsWith('data:')) {
      data = [...(data ?? []), line.slice(line.startsWith('data: ') ? 6 : 5)];
    }
  }
  return out;
}

const logText = (events: Array<{ event: string; data: string }>) =>
  events
    .filter((e) => e.event === 'log')
    .map((e) => e.data)
    .join('\n');

async function peakRssMiB(pid: number): Promise<number> {
  const status = await fs.readFile(`/proc/${pid}/status`, 'utf8');
  return Number(/VmHWM:\s+(\d+)/.exec(status)?.[1] ?? 0) / 1024;
}

async function info(url: string, section: string, field: string): Promise<number> {
  const { Redis } = await import('ioredis');
  const r = new Redis(url);
  try {
    const text = await r.info(section);
    return Number(new RegExp(`^${field}:(\\d+)`, 'm').exec(text)?.[1]);
  } finally {
    r.disconnect();
  }
}

describe('bounded logs and streams', { timeout: 600_000 }, () => {
  test('output floods, idle followers, caps, revocation and CR forgery', async () => {
    const redis = await startRedis();
    const { env } = await serviceEnv(redis.url, {
      KILN_MAX_LOG_BYTES: String(BUDGET),
      KILN_MAX_LOG_FOLLOWERS_PER_PROJECT: String(FOLLOWERS),
      KILN_RATE_LIMIT_PER_MINUTE: '0',
    });
    const port = await freePort();
    const apiProc = await spawnApi('api', env, port);
    const worker = spawnWorker('worker', env);
    await withOutputOnFailure([apiProc, worker], async () => {
      const token = await bootstrapProject(env.DATABASE_URL as string, 'alpha');
      const other = await bootstrapProject(env.DATABASE_URL as string, 'beta');
      const api = apiClient(apiProc.base, token);
      const memoryBefore = await info(redis.url, 'memory', 'used_memory');

      // 1. 20 MiB of output: both logs stop at the budget with the marker.
      const flood = await busyboxContext(
        scriptDockerfile(
          '/bin/busybox yes | /bin/busybox head -c 20971520; /bin/busybox mkdir -p /out; echo ok > /out/r',
        ),
      );
      const big = await api.submit(await tgz(flood.dir), QUERY);
      const live = await openSse(apiProc.base, `/v1/builds/${big.id}/logs`, token);
      assert.equal(live.status, 200);
      const done = await api.waitFor(big.id, ['succeeded', 'failed'], 240_000);
      assert.equal(done.status, 'succeeded', JSON.stringify(done));
      const liveEvents = parseSse(await live.ended);
      assert.deepEqual(liveEvents.at(-1), { event: 'end', data: 'succeeded' });
      const liveLog = logText(liveEvents);
      assert.ok(liveLog.trimEnd().endsWith(MARKER), `live log ends with: ${liveLog.slice(-200)}`);
      const stored = await api.logs(big.id);
      assert.ok(stored.trimEnd().endsWith(MARKER), `stored log ends with: ${stored.slice(-200)}`);
      const storedBytes = Buffer.byteLength(stored);
      assert.ok(storedBytes <= BUDGET + TAIL, `stored log ${storedBytes} bytes`);
      assert.ok(storedBytes > BUDGET / 2, `stored log ${storedBytes} bytes`);
      const memoryAfter = await info(redis.url, 'memory', 'used_memory');
      const rss = { api: await peakRssMiB(apiProc.pid), worker: await peakRssMiB(worker.pid) };
      console.log(
        `  flood: stored log ${(storedBytes / KiB).toFixed(0)} KiB; Redis used_memory ${(memoryBefore / MiB).toFixed(1)} → ${(memoryAfter / MiB).toFixed(1)} MiB; peak RSS api ${rss.api.toFixed(0)} MiB, worker ${rss.worker.toFixed(0)} MiB`,
      );
      assert.ok(memoryAfter - memoryBefore < 16 * MiB, 'Redis memory grew by less than 16 MiB');
      assert.ok(rss.api < 250 && rss.worker < 250, JSON.stringify(rss));

      // 2. Many idle followers of a running build: one Redis reader, the API answers, builds run.
      const slow = await busyboxContext(
        scriptDockerfile('/bin/busybox sleep 120; /bin/busybox mkdir -p /out; echo ok > /out/r'),
      );
      const running = await api.submit(await tgz(slow.dir), QUERY);
      await api.waitFor(running.id, ['running'], 60_000);
      const first = await openSse(apiProc.base, `/v1/builds/${running.id}/logs`, token);
      const clientsBefore = await info(redis.url, 'clients', 'connected_clients');
      const followers = [first];
      for (let i = 1; i < FOLLOWERS; i += 50) {
        const batch = Array.from({ length: Math.min(50, FOLLOWERS - i) }, () =>
          openSse(apiProc.base, `/v1/builds/${running.id}/logs`, token),
        );
        followers.push(...(await Promise.all(batch)));
      }
      assert.deepEqual(new Set(followers.map((f) => f.status)), new Set([200]));
      const clientsAfter = await info(redis.url, 'clients', 'connected_clients');
      assert.ok(clientsAfter <= clientsBefore + 1, `Redis clients ${clientsBefore} → ${clientsAfter}`);
      const latencies: number[] = [];
      for (let i = 0; i < 20; i++) {
        const t = performance.now();
        assert.equal((await fetch(`${apiProc.base}/healthz`)).status, 200);
        latencies.push(performance.now() - t);
      }
      latencies.sort((a, b) => a - b);
      console.log(
        `  ${FOLLOWERS} followers: Redis clients ${clientsBefore} → ${clientsAfter}; /healthz median ${latencies[10]?.toFixed(1)} ms, max ${latencies.at(-1)?.toFixed(1)} ms; api RSS peak ${(await peakRssMiB(apiProc.pid)).toFixed(0)} MiB`,
      );
      const quick = await busyboxContext(RESULT_DOCKERFILE);
      const small = await api.submit(await tgz(quick.dir), QUERY);
      assert.equal((await api.waitFor(small.id, ['succeeded', 'failed'], 120_000)).status, 'succeeded');

      // 3. The per-project cap: alpha is full, beta is not.
      const refused = await fetch(`${apiProc.base}/v1/builds/${running.id}/logs`, {
        headers: { accept: 'text/event-stream', authorization: `Bearer ${token}` },
      });
      assert.equal(refused.status, 429);
      assert.equal(((await refused.json()) as { error: { code: string } }).error.code, 'rate_limited');
      const betaBuild = await apiClient(apiProc.base, other).submit(await tgz(quick.dir), QUERY);
      const betaFollower = await openSse(apiProc.base, `/v1/builds/${betaBuild.id}/logs`, other);
      assert.equal(betaFollower.status, 200);
      betaFollower.close();
      for (const f of followers) f.close();

      // 4. Revoking the token ends its streams.
      const created = await api.api('/v1/tokens', {
        method: 'POST',
        body: JSON.stringify({ name: 'follower' }),
        headers: { 'content-type': 'application/json' },
      });
      const extra = (await created.json()) as { id: string; token: string };
      let revokedFollower: Sse | undefined;
      for (let i = 0; i < 50 && !revokedFollower; i++) {
        // The closed followers leave the count as their sockets close.
        const f = await openSse(apiProc.base, `/v1/builds/${running.id}/logs`, extra.token);
        if (f.status === 200) revokedFollower = f;
        else await new Promise((r) => setTimeout(r, 100));
      }
      assert.ok(revokedFollower, 'a follower with the new token');
      assert.equal((await api.api(`/v1/tokens/${extra.id}`, { method: 'DELETE' })).status, 204);
      const t0 = Date.now();
      const revokedEvents = parseSse(await revokedFollower.ended);
      assert.equal(revokedEvents.at(-1)?.event, 'revoked');
      assert.ok(Date.now() - t0 < 5000);
      assert.equal((await api.api(`/v1/builds/${running.id}/cancel`, { method: 'POST' })).status, 202);

      // 5. CR in build output forges no event.
      const forge = await busyboxContext(
        scriptDockerfile(
          "printf 'a\\r\\nevent: end\\r\\ndata: x\\r\\nb\\revent: end\\rdata: forged\\r\\n'; /bin/busybox mkdir -p /out; echo ok > /out/r",
        ),
      );
      const forged = await api.submit(await tgz(forge.dir), QUERY);
      const watcher = await openSse(apiProc.base, `/v1/builds/${forged.id}/logs`, token);
      const events = parseSse(await watcher.ended);
      assert.deepEqual(
        events.filter((e) => e.event !== 'log'),
        [{ event: 'end', data: 'succeeded' }],
      );
      assert.match(logText(events), /event: end/);
    });
    await apiProc.stop();
    await worker.stop();
  });
});
