// Builders discovered by DNS: a DNS server on loopback whose answers the test changes, and real
// daemons behind the members (the standalone buildkitd v0.24 and a dockerd, each reached through a
// TCP listener on its own 127.0.0.x address with the same port, as pods behind a headless Service).
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { after, before, describe, test } from 'node:test';
import {
  builderCapabilitiesKey,
  builderMembersKey,
  builderPlatformsKey,
  type SpecRequirements,
} from '@kiln/core';
import { Redis } from 'ioredis';
import { makeTestPki } from '../../../../packages/buildkit-client/test-support/pki.js';
import { startPipe, startRelay } from '../../../../packages/buildkit-client/test-support/relay.js';
import { freePortOn } from '../../../../packages/core/test-support/services.js';
import { startTestDns, type TestDnsServer } from '../../test-support/dns-server.js';
import { testLogger } from '../../test-support/helpers.js';
import { BuilderPool, type BuilderPoolOptions, NoBuilderAvailableError } from './pool.js';

const redisUrl = process.env.KILN_TEST_REDIS_URL ?? '';
const buildkitd = process.env.KILN_TEST_BUILDKITD_ADDR ?? '';
const dockerSock = process.env.KILN_TEST_DOCKER_SOCK ?? '';
const skip =
  redisUrl && buildkitd.startsWith('unix://') && dockerSock
    ? false
    : 'needs KILN_TEST_REDIS_URL, KILN_TEST_BUILDKITD_ADDR and KILN_TEST_DOCKER_SOCK (npm test)';

describe('builders discovered by DNS', { skip }, () => {
  let redis: Redis;
  let dns: TestDnsServer;
  const closers: Array<() => Promise<void>> = [];

  before(async () => {
    redis = new Redis(redisUrl);
    dns = await startTestDns();
  });
  after(async () => {
    for (const close of closers.reverse()) await close();
    await dns.close();
    await redis.quit();
  });

  function pool(builders: BuilderPoolOptions['builders'], keyPrefix: string): BuilderPool {
    const p = new BuilderPool({
      builders,
      redis,
      logger: testLogger(),
      keyPrefix,
      dnsServers: [dns.server],
      discoveryIntervalMs: 60_000,
      healthIntervalMs: 0,
      healthTimeoutMs: 3000,
    });
    closers.push(() => p.close());
    return p;
  }

  const waitHealthy = async (p: BuilderPool, address: string) => {
    const end = Date.now() + 20_000;
    for (;;) {
      const s = (await p.status()).find((b) => b.address === address);
      if (s?.healthy === true) return s;
      if (Date.now() > end) throw new Error(`${address} not healthy: ${JSON.stringify(s)}`);
      await new Promise((r) => setTimeout(r, 50));
    }
  };

  test('members join and leave with the DNS answers; a vanished member gets no new build, its running one finishes', async () => {
    const port = await freePortOn(['127.0.0.2', '127.0.0.3']);
    const a = await startPipe(buildkitd.slice('unix://'.length), { tcp: true, host: '127.0.0.2', port });
    const b = await startRelay(dockerSock, { tcp: true, host: '127.0.0.3', port });
    closers.push(a.close, b.close);
    const name = `builders-${randomBytes(3).toString('hex')}.kiln.test`;
    const service = `dns+tcp://${name}:${port}`;
    const keyPrefix = `kt-disc-${randomBytes(4).toString('hex')}`;
    dns.answer(name, ['127.0.0.2']);
    const p = pool([{ address: service, concurrency: 2 }], keyPrefix);
    await p.start();

    const first = await waitHealthy(p, a.address);
    assert.deepEqual(
      (await p.status()).map((s) => s.address),
      [a.address],
    );
    assert.match(first.capabilities?.version ?? '', /^v0\.24\./, 'member a is the standalone buildkitd');
    assert.deepEqual(JSON.parse((await redis.get(builderMembersKey(service, keyPrefix))) ?? 'null'), [
      a.address,
    ]);
    const running = await p.acquire({ buildId: 'r1' });
    assert.equal(running.address, a.address);
    const client = await running.client();

    // The pod behind a goes, another comes: a leaves the pool, b joins and is checked at once.
    dns.answer(name, ['127.0.0.3']);
    await p.discover();
    const second = await waitHealthy(p, b.address);
    assert.deepEqual(second.capabilities?.version, null, 'member b is dockerd (BuildKit 0.8, no Info)');
    assert.deepEqual(
      (await p.status()).map((s) => s.address),
      [b.address],
    );
    assert.deepEqual(JSON.parse((await redis.get(builderMembersKey(service, keyPrefix))) ?? 'null'), [
      b.address,
    ]);
    // What the vanished member published is withdrawn: pod IPs that come and go leave nothing behind.
    const published = async (address: string) =>
      (await redis.hexists(builderCapabilitiesKey(keyPrefix), address)) +
      (await redis.hexists(builderPlatformsKey(keyPrefix), address));
    for (let i = 0; (await published(a.address)) > 0; i++) {
      assert.ok(i < 100, `${a.address} is still published`);
      await new Promise((r) => setTimeout(r, 50));
    }
    assert.equal(await redis.hexists(builderCapabilitiesKey(keyPrefix), b.address), 1);
    // a still has a free slot, yet every new build goes to b, and past b's capacity none goes to a.
    const leases = [await p.acquire({ buildId: 'n1' }), await p.acquire({ buildId: 'n2' })];
    assert.deepEqual(
      leases.map((l) => l.address),
      [b.address, b.address],
    );
    await assert.rejects(
      p.acquire({ buildId: 'n3' }),
      (err: unknown) => err instanceof NoBuilderAvailableError && err.reason === 'capacity',
    );
    // The build running on a keeps its client and lease until it ends.
    assert.ok((await client.listWorkers()).length > 0);
    // A build that fails there still learns that a answers (a Dockerfile error is not a lost
    // builder) and what it is, without a being published again.
    assert.equal(await p.probe(a.address), true);
    assert.match((await p.capabilitiesOf(a.address))?.version ?? '', /^v0\.24\./);
    assert.equal(await published(a.address), 0);
    assert.ok((await p.leaseExpiry(a.address, 'r1')) !== undefined);
    await running.release();
    assert.equal(await p.leaseExpiry(a.address, 'r1'), undefined);
    for (const l of leases) await l.release();

    // A DNS outage keeps the members known; a name with no records empties the pool.
    dns.silence(true);
    await p.discover();
    dns.silence(false);
    assert.deepEqual(
      (await p.status()).map((s) => s.address),
      [b.address],
    );
    dns.answer(name, []);
    await p.discover();
    assert.deepEqual(await p.status(), []);
    await assert.rejects(
      p.acquire({ buildId: 'n4', requires: { platforms: ['linux/amd64'], features: [] } }),
      (err: unknown) =>
        err instanceof NoBuilderAvailableError &&
        err.reason === 'unhealthy' &&
        err.message === `no builder: ${service} resolved to no address`,
    );
    // Both pods come back.
    dns.answer(name, ['127.0.0.3', '127.0.0.2']);
    await p.discover();
    await waitHealthy(p, a.address);
    await waitHealthy(p, b.address);
  });

  test('a name with no members now does not make a build it could serve fail as no builder capable', async () => {
    const port = await freePortOn(['127.0.0.4']);
    const member = await startPipe(buildkitd.slice('unix://'.length), { tcp: true, host: '127.0.0.4', port });
    closers.push(member.close);
    const name = `rolling-${randomBytes(3).toString('hex')}.kiln.test`;
    const service = `dns+tcp://${name}:${port}`;
    const docker = `docker://${dockerSock}`;
    // A rolling restart: the standalone builders' name has no ready member for now.
    dns.answer(name, []);
    const p = pool(
      [
        { address: docker, concurrency: 1 },
        { address: service, concurrency: 1 },
      ],
      `kt-disc-${randomBytes(4).toString('hex')}`,
    );
    await p.start();
    await waitHealthy(p, docker);
    // An oci output: dockerd 20.10's BuildKit has no such exporter; the name's members will.
    const oci: SpecRequirements = { platforms: [], features: ['exporter:oci'] };
    await assert.rejects(
      p.acquire({ buildId: 'o1', requires: oci }),
      (err: unknown) =>
        err instanceof NoBuilderAvailableError &&
        err.reason === 'unhealthy' &&
        err.message.endsWith(`${service} resolved to no address`),
    );
    dns.answer(name, ['127.0.0.4']);
    await p.discover();
    await waitHealthy(p, member.address);
    const lease = await p.acquire({ buildId: 'o1', requires: oci });
    assert.equal(lease.address, member.address);
    await lease.release();
  });

  test('TLS members are verified against the name, not their address', async () => {
    const pki = makeTestPki();
    closers.push(async () => pki.cleanup());
    const port = await freePortOn(['127.0.0.4']);
    const relay = await startRelay(dockerSock, {
      tcp: true,
      host: '127.0.0.4',
      port,
      tls: {
        key: readFileSync(pki.serverKey),
        cert: readFileSync(pki.serverCert),
        ca: readFileSync(pki.ca),
      },
    });
    closers.push(relay.close);
    const tls = {
      ca: readFileSync(pki.ca, 'utf8'),
      cert: readFileSync(pki.clientCert, 'utf8'),
      key: readFileSync(pki.clientKey, 'utf8'),
    };
    // The server certificate names buildkitd.test (and 127.0.0.1), never 127.0.0.4.
    dns.answer('buildkitd.test', ['127.0.0.4']);
    const other = `other-${randomBytes(3).toString('hex')}.kiln.test`;
    dns.answer(other, ['127.0.0.4']);
    const good = pool(
      [{ address: `dns+tcp://buildkitd.test:${port}`, concurrency: 1, tls }],
      `kt-disc-${randomBytes(4).toString('hex')}`,
    );
    await good.start();
    assert.equal((await waitHealthy(good, `tcp://127.0.0.4:${port}`)).healthy, true);
    const wrong = pool(
      [{ address: `dns+tcp://${other}:${port}`, concurrency: 1, tls }],
      `kt-disc-${randomBytes(4).toString('hex')}`,
    );
    await wrong.start();
    // The same listener, reached under a name its certificate does not carry: the handshake fails
    // (gRPC reports it as a failed connection).
    const [status] = await wrong.status();
    assert.equal(status?.address, `tcp://127.0.0.4:${port}`);
    assert.equal(status?.healthy, false);
    assert.match(status?.lastError ?? '', /cannot reach BuildKit/);
  });
});
