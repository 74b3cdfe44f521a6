// GET /v1/builders: health and capabilities as the workers publish them in Redis, load from the
// live leases, addresses and errors without credentials.
import assert from 'node:assert/strict';
import { after, describe, test } from 'node:test';
import { builderCapabilitiesKey, builderHealthKey, builderLeaseKey } from '@kiln/core';
import { freePort } from '../../packages/core/test-support/services.js';
import { startTestKiln, type TestKiln } from '../support/kiln.js';

const socket = process.env.KILN_TEST_DOCKER_SOCK;
if (!socket) throw new Error('KILN_TEST_DOCKER_SOCK is not set: run through `npm test`');

interface BuilderJson {
  address: string;
  concurrency: number;
  load: number;
  healthy: boolean | null;
  lastError: string | null;
  checkedAt: string | null;
  platform: string | null;
  capabilities: { version: string | null; platforms: string[]; features: string[] } | null;
}

const list = async (kiln: TestKiln, token = kiln.token) => {
  const res = await fetch(`${kiln.url}/v1/builders`, { headers: { authorization: `Bearer ${token}` } });
  return { status: res.status, text: await res.text() };
};

describe('GET /v1/builders', () => {
  const kilns: TestKiln[] = [];
  after(async () => {
    for (const k of kilns) await k.stop();
  });

  test('health and load of every builder; credentials in addresses and errors are redacted', async () => {
    // Nothing listens there: the worker finds it unhealthy, and its error names the address.
    const port = await freePort();
    const secretBuilder = `tcp://kiln:s3cret-pass@127.0.0.1:${port}?token=t0ps3cret`;
    const kiln = await startTestKiln({
      worker: true,
      env: { KILN_BUILDERS: `docker://${socket}=3,${secretBuilder}=2` },
    });
    kilns.push(kiln);

    assert.equal((await list(kiln, 'no-such-token-here')).status, 401);

    // The worker's checks are published without being waited for.
    let items: BuilderJson[] = [];
    for (const end = Date.now() + 30_000; ; ) {
      const res = await list(kiln);
      assert.equal(res.status, 200, res.text);
      assert.doesNotMatch(res.text, /s3cret|t0ps3cret/);
      items = (JSON.parse(res.text) as { items: BuilderJson[] }).items;
      if (items.every((b) => b.healthy !== null)) break;
      if (Date.now() > end) throw new Error(`builders never checked: ${res.text}`);
      await new Promise((r) => setTimeout(r, 200));
    }
    const [docker, remote] = items as [BuilderJson, BuilderJson];
    assert.equal(docker.address, `docker://${socket}`);
    assert.equal(docker.healthy, true);
    assert.equal(docker.concurrency, 3);
    assert.equal(docker.load, 0);
    assert.equal(docker.lastError, null);
    assert.match(docker.platform ?? '', /^linux\/\w+/);
    assert.ok(docker.checkedAt && Date.parse(docker.checkedAt) > Date.now() - 60_000);
    assert.equal(remote.address, `tcp://***@127.0.0.1:${port}?***`);
    // dockerd 20.10 has no Control.Info; a builder never reached has no capabilities yet.
    assert.deepEqual(docker.capabilities?.version, null);
    assert.ok(docker.capabilities?.platforms.includes(docker.platform ?? ''));
    assert.equal(remote.capabilities, null);
    assert.equal(remote.healthy, false);
    assert.equal(remote.concurrency, 2);
    assert.match(remote.lastError ?? '', /\S/);

    // Load counts live leases only: one a worker holds, one a dead worker left behind.
    const [seconds] = await kiln.redis.time();
    const nowMs = Number(seconds) * 1000;
    await kiln.redis.zadd(
      builderLeaseKey(`docker://${socket}`),
      nowMs + 60_000,
      'live',
      nowMs - 1000,
      'dead',
    );
    const loaded = (JSON.parse((await list(kiln)).text) as { items: BuilderJson[] }).items;
    assert.equal(loaded[0]?.load, 1);
  });

  test('a builder no worker has checked lately is unknown, not healthy', async () => {
    const kiln = await startTestKiln({});
    kilns.push(kiln);
    const res = await list(kiln);
    assert.equal(res.status, 200, res.text);
    const [only] = (JSON.parse(res.text) as { items: BuilderJson[] }).items;
    assert.deepEqual(only, {
      address: `docker://${socket}`,
      concurrency: kiln.config.builders[0]?.concurrency,
      load: 0,
      healthy: null,
      lastError: null,
      checkedAt: null,
      platform: null,
      capabilities: null,
    });
    // A record that is not what a worker writes is ignored, not a 500.
    await kiln.redis.set(builderHealthKey(`docker://${socket}`), '{not json');
    await kiln.redis.hset(builderCapabilitiesKey(), `docker://${socket}`, '{"version":7}');
    const again = JSON.parse((await list(kiln)).text) as { items: BuilderJson[] };
    assert.equal(again.items[0]?.healthy, null);
    assert.equal(again.items[0]?.capabilities, null);
  });
});
