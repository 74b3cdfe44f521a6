// Builder drain, as a buildkitd pod's preStop does it: deploy/kubernetes/base/buildkitd/drain.sh
// run by busybox against the API, a worker process, and two dockerds reached over TCP (relays on
// 127.0.0.5 and 127.0.0.6, one port, as pods), discovered through a DNS server the test runs. The draining builder gets no new
// build while another could take it; the script returns once the build it runs is over, or fails
// at its timeout while a build still runs.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import path from 'node:path';
import { describe, test } from 'node:test';
import { builderDrainingKey } from '@kiln/core';
import { Redis } from 'ioredis';
import { startTestDns } from '../../apps/worker/test-support/dns-server.js';
import { startRelay } from '../../packages/buildkit-client/test-support/relay.js';
import { freePortOn, testRedisUrl } from '../../packages/core/test-support/services.js';
import {
  addCleanup,
  busyboxContext,
  FINAL,
  ROOT,
  scriptDockerfile,
  testBuilders,
  tgz,
  waitUntil,
  withKiln,
} from '../support/processes.js';

const DRAIN_SH = path.join(ROOT, 'deploy/kubernetes/base/buildkitd/drain.sh');
const TOKEN = 'd'.repeat(40);
const QUERY = 'output=type=tar,dest=o.tar&network=none&noCache=true';

/** Runs drain.sh with busybox sh; resolves with its exit code, output and when it ended. */
function runDrain(env: Record<string, string>) {
  const child = spawn('/bin/busybox', ['sh', DRAIN_SH], {
    env: { PATH: '/usr/bin:/bin', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let output = '';
  const add = (c: Buffer) => {
    output += c.toString();
  };
  child.stdout.on('data', add);
  child.stderr.on('data', add);
  addCleanup(async () => void child.kill('SIGKILL'));
  return new Promise<{ code: number | null; output: string; endedAt: number }>((resolve) =>
    child.on('exit', (code) => resolve({ code, output, endedAt: Date.now() })),
  );
}

describe('builder drain (preStop script, API, worker process)', { concurrency: false }, () => {
  test('a draining builder gets no new builds; the script waits for its build, or gives up at its timeout', {
    timeout: 180_000,
  }, async () => {
    const { D1, D2 } = testBuilders();
    const port = await freePortOn(['127.0.0.5', '127.0.0.6']);
    const x = await startRelay(D1.slice('docker://'.length), { tcp: true, host: '127.0.0.5', port });
    const y = await startRelay(D2.slice('docker://'.length), { tcp: true, host: '127.0.0.6', port });
    addCleanup(x.close);
    addCleanup(y.close);
    const dns = await startTestDns();
    dns.answer('x.kiln.test', ['127.0.0.5']);
    dns.answer('y.kiln.test', ['127.0.0.6']);
    const redisUrl = testRedisUrl();
    const redis = new Redis(redisUrl);
    const sleepy = await busyboxContext(
      scriptDockerfile('/bin/busybox sleep $N; /bin/busybox mkdir -p /out; echo done > /out/r.txt'),
    );
    const body = await tgz(sleepy.dir);
    await withKiln(
      {
        project: 'drain',
        redisUrl,
        // x has the room: without the drain, the second quick build would go there.
        // Discovered, as on Kubernetes: two names (x has the room) answered by a DNS server here.
        env: {
          KILN_BUILDERS: `dns+tcp://x.kiln.test:${port}=3,dns+tcp://y.kiln.test:${port}=1`,
          KILN_BUILDER_DNS_SERVERS: dns.server,
          KILN_BUILDER_DRAIN_TOKEN: TOKEN,
        },
        release: [() => redis.disconnect(), () => sleepy.cleanup(), () => dns.close()],
      },
      async ({ api: a, spawn: spawnWorker }) => {
        spawnWorker('w1');
        await waitUntil(
          'the API lists both members, healthy',
          async () => {
            const res = await a.api('/v1/builders');
            const { items } = (await res.json()) as {
              items: Array<{ address: string; healthy: boolean | null }>;
            };
            return (
              JSON.stringify(items.map((b) => [b.address, b.healthy])) ===
              JSON.stringify([
                [x.address, true],
                [y.address, true],
              ])
            );
          },
          30_000,
        );
        const drainEnv = (ip: string, timeout: number) => ({
          DRAIN_API_URL: a.base,
          DRAIN_TOKEN: TOKEN,
          DRAIN_IP: ip,
          DRAIN_PORT: String(port),
          DRAIN_TIMEOUT_SECONDS: String(timeout),
          DRAIN_POLL_SECONDS: '1',
        });

        // Both builders are empty: the long build goes to x, listed first.
        const long = await a.submit(body, `${QUERY}&build-arg=N%3D6`);
        const running = await a.waitFor(long.id, ['running', ...FINAL], 60_000);
        assert.equal(running.builder, x.address);

        const drained = runDrain(drainEnv('127.0.0.5', 120));
        await waitUntil(
          'x is marked draining',
          async () => (await redis.exists(builderDrainingKey(x.address))) === 1,
          10_000,
        );
        const quick = [
          await a.submit(body, `${QUERY}&build-arg=N%3D1`),
          await a.submit(body, `${QUERY}&build-arg=N%3D1`),
        ];
        const done = await Promise.all(quick.map((b) => a.waitFor(b.id, FINAL, 60_000)));
        assert.deepEqual(
          done.map((b) => [b.status, b.builder]),
          [
            ['succeeded', y.address],
            ['succeeded', y.address],
          ],
          'both went to y, one after the other, though x had two free slots',
        );

        const result = await drained;
        assert.equal(result.code, 0, result.output);
        const afterDrain = await a.get(long.id);
        assert.equal(afterDrain.status, 'succeeded', 'the script returned only once the build on x was over');
        assert.match(result.output, /no Kiln build runs on tcp:\/\/127\.0\.0\.5/);

        // The timeout: y runs a build longer than the script may wait.
        const stuck = await a.submit(body, `${QUERY}&build-arg=N%3D30`);
        assert.equal((await a.waitFor(stuck.id, ['running', ...FINAL], 60_000)).builder, y.address);
        const started = Date.now();
        const gaveUp = await runDrain(drainEnv('127.0.0.6', 2));
        assert.equal(gaveUp.code, 1, gaveUp.output);
        assert.ok(gaveUp.endedAt - started < 15_000, `gave up after ${gaveUp.endedAt - started} ms`);
        assert.match(gaveUp.output, /still runs 1 Kiln builds/);
        assert.equal((await a.get(stuck.id)).status, 'running');
        const cancel = await a.api(`/v1/builds/${stuck.id}/cancel`, { method: 'POST' });
        assert.equal(cancel.status, 202, await cancel.text());
        await a.waitFor(stuck.id, FINAL, 60_000);
      },
    );
  });

  test('the drain route: its own token, 4xx on bad input', async () => {
    const redisUrl = testRedisUrl();
    await withKiln(
      { project: 'drain-route', redisUrl, env: { KILN_BUILDER_DRAIN_TOKEN: TOKEN } },
      async ({ api: a }) => {
        const post = (token: string, body: unknown) =>
          fetch(`${a.base}/v1/builders/drain`, {
            method: 'POST',
            headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
            body: JSON.stringify(body),
          });
        assert.equal(
          (await post(a.token, { address: 'tcp://10.0.0.1:1234' })).status,
          401,
          'a project token',
        );
        for (const bad of [{}, { address: 'http://x' }, { address: 'tcp://a:1', seconds: 0 }]) {
          const res = await post(TOKEN, bad);
          assert.equal(res.status, 400, JSON.stringify(bad));
          assert.ok(((await res.json()) as { error?: { code?: string } }).error?.code);
        }
        const ok = await post(TOKEN, { address: 'tcp://10.0.0.1:1234', seconds: 5 });
        assert.equal(ok.status, 200);
        assert.deepEqual(await ok.json(), { address: 'tcp://10.0.0.1:1234', load: 0, seconds: 5 });
      },
    );
  });
});
