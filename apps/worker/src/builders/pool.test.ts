// BuilderPool against a real Redis, with fake BuildKit clients.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { after, before, describe, test } from 'node:test';
import type { BuildkitClient } from '@kiln/buildkit-client';
import { Redis } from 'ioredis';
import { sleep, testLogger } from '../../test-support/helpers.js';
import {
  BuilderPool,
  type BuilderPoolOptions,
  NoBuilderAvailableError,
  NoCapableBuilderError,
} from './pool.js';

const redisUrl = process.env.KILN_TEST_REDIS_URL ?? '';
const skip = redisUrl === '' ? 'needs KILN_TEST_REDIS_URL' : false;

type Behaviour = 'ok' | 'unreachable' | 'hang';

/** Fake daemons: what each address does (and which platforms it reports), and how often it was dialed. */
function fakes(behaviour: Record<string, Behaviour>, platforms: Record<string, string[]> = {}) {
  const dials: Record<string, number> = {};
  const closed: string[] = [];
  const connectBuilder = async (address: string): Promise<BuildkitClient> => {
    dials[address] = (dials[address] ?? 0) + 1;
    if (behaviour[address] === 'unreachable') throw new Error(`cannot reach ${address}`);
    return {
      listWorkers: () =>
        behaviour[address] === 'hang'
          ? new Promise(() => {})
          : Promise.resolve([
              {
                id: 'w',
                labels: {},
                platforms: (platforms[address] ?? []).map((p) => {
                  const [os, architecture, variant] = p.split('/');
                  return { os, architecture, ...(variant ? { variant } : {}) };
                }),
              },
            ]),
      info: () =>
        Promise.resolve({
          buildkitVersion: { package: 'github.com/moby/buildkit', version: 'v0.24.0', revision: '' },
        }),
      close: async () => {
        closed.push(address);
      },
    } as unknown as BuildkitClient;
  };
  return { dials, closed, connectBuilder };
}

describe('BuilderPool', { skip }, () => {
  let redis: Redis;
  const pools: BuilderPool[] = [];

  before(() => {
    redis = new Redis(redisUrl);
  });
  after(async () => {
    for (const p of pools) await p.close();
    await redis.quit();
  });

  function pool(
    builders: BuilderPoolOptions['builders'],
    over: Partial<BuilderPoolOptions> & { keyPrefix: string },
  ): BuilderPool {
    const p = new BuilderPool({
      builders,
      redis,
      logger: testLogger(),
      healthIntervalMs: 0,
      healthTimeoutMs: 300,
      connectBuilder: fakes({}).connectBuilder,
      ...over,
    });
    pools.push(p);
    return p;
  }
  const prefix = () => `kt-pool-${randomBytes(4).toString('hex')}`;
  /** A fresh pool of builders x and y, `concurrency` each. */
  const twoBuilders = (concurrency: number) =>
    pool(
      [
        { address: 'x', concurrency },
        { address: 'y', concurrency },
      ],
      { keyPrefix: prefix() },
    );

  test('capacity is shared by every process through Redis', async () => {
    const keyPrefix = prefix();
    const a = pool([{ address: 'x', concurrency: 1 }], { keyPrefix });
    const b = pool([{ address: 'x', concurrency: 1 }], { keyPrefix });
    const lease = await a.acquire({ buildId: 'b1' });
    assert.equal(lease.address, 'x');
    await assert.rejects(b.acquire({ buildId: 'b2' }), (err: unknown) => {
      assert.ok(err instanceof NoBuilderAvailableError);
      assert.equal(err.code, 'no_builder_available');
      assert.equal(err.reason, 'capacity');
      assert.match(err.message, /x 1\/1/);
      return true;
    });
    // The build may acquire again (a run of it taking over, see below), others may not.
    const again = await a.acquire({ buildId: 'b1' });
    assert.equal(again.address, 'x');
    await lease.release();
    await again.release();
    assert.equal((await b.acquire({ buildId: 'b2' })).address, 'x');
    assert.deepEqual(await a.loads(), [1]);
  });

  test('the least-loaded builder is chosen, the project’s last builder first', async () => {
    const p = twoBuilders(2);
    await p.checkAll();
    const leases = [];
    for (const id of ['1', '2', '3']) leases.push(await p.acquire({ buildId: id }));
    assert.deepEqual(
      leases.map((l) => l.address),
      ['x', 'y', 'x'],
    );
    for (const lease of leases) await lease.release();

    await p.setAffinity('proj', 'y');
    assert.equal((await p.acquire({ buildId: 'a1', projectId: 'proj' })).address, 'y');
    assert.equal((await p.acquire({ buildId: 'a2', projectId: 'proj' })).address, 'y');
    // y is full now: affinity gives way to capacity.
    assert.equal((await p.acquire({ buildId: 'a3', projectId: 'proj' })).address, 'x');
  });

  test("isolation by project: a builder serves one project's builds at a time, and drains for a waiting one", async () => {
    const keyPrefix = prefix();
    const p = pool(
      [
        { address: 'x', concurrency: 2 },
        { address: 'y', concurrency: 2 },
      ],
      { keyPrefix, isolation: 'project' },
    );
    // Ids sort as they were made, as ULIDs do: ties in a line go to the older build.
    const a1 = await p.acquire({ buildId: '1-a', projectId: 'A' });
    const b1 = await p.acquire({ buildId: '2-b', projectId: 'B' });
    assert.notEqual(b1.address, a1.address, "B's build is not placed beside A's");
    // Both builders taken: A's second build joins A's builder, C's waits for a builder to empty.
    const a2 = await p.acquire({ buildId: '3-a', projectId: 'A' });
    assert.equal(a2.address, a1.address);
    await assert.rejects(p.acquire({ buildId: '4-c', projectId: 'C' }), (err: unknown) => {
      assert.ok(err instanceof NoBuilderAvailableError);
      assert.match(err.message, /serving another project's builds/);
      return true;
    });
    await b1.release();
    const c1 = await p.acquire({ buildId: '4-c', projectId: 'C' });
    assert.equal(c1.address, b1.address);
    // D waits in both builders' lines. A's next build, also the first A has queued (rank 1),
    // stands aside for it on A's builder: else a project whose builds overlap keeps the builder.
    await assert.rejects(p.acquire({ buildId: '5-d', projectId: 'D' }), NoBuilderAvailableError);
    await a1.release();
    await assert.rejects(p.acquire({ buildId: '6-a', projectId: 'A' }), NoBuilderAvailableError);
    await a2.release();
    await assert.rejects(p.acquire({ buildId: '6-a', projectId: 'A' }), NoBuilderAvailableError);
    const d1 = await p.acquire({ buildId: '5-d', projectId: 'D' });
    assert.equal(d1.address, a1.address);
    for (const l of [c1, d1]) await l.release();

    // Shared builders (the default) put any project's builds side by side.
    const shared = pool([{ address: 'x', concurrency: 2 }], { keyPrefix: prefix() });
    const s1 = await shared.acquire({ buildId: 's1', projectId: 'A' });
    const s2 = await shared.acquire({ buildId: 's2', projectId: 'B' });
    assert.equal(s1.address, s2.address);
    for (const l of [s1, s2]) await l.release();
  });

  test('builders that failed this build are avoided while others have room', async () => {
    const p = twoBuilders(1);
    assert.equal((await p.acquire({ buildId: 'r1', avoid: ['x'] })).address, 'y');
    // Only the avoided builder has room: better there than not at all.
    assert.equal((await p.acquire({ buildId: 'r2', avoid: ['x'] })).address, 'x');
  });

  test('expired leases free their slot; running leases are renewed', async () => {
    const keyPrefix = prefix();
    const p = pool([{ address: 'x', concurrency: 1 }], { keyPrefix, leaseTtlMs: 300 });
    // A lease left by a dead process, expired.
    await redis.zadd(p.leaseKey('x'), (await p.now()) - 1, 'ghost');
    const lease = await p.acquire({ buildId: 'live' });
    assert.equal(await redis.zscore(p.leaseKey('x'), 'ghost'), null);
    await sleep(700);
    const expiry = await p.leaseExpiry('x', 'live');
    assert.ok(expiry !== undefined && expiry > (await p.now()), 'the lease was renewed');
    await lease.release();
    assert.equal(await p.leaseExpiry('x', 'live'), undefined);
  });

  test('a superseded run of a build neither frees nor keeps alive the lease its new run holds', async () => {
    const keyPrefix = prefix();
    const woken: string[] = [];
    const p = pool([{ address: 'x', concurrency: 1 }], {
      keyPrefix,
      leaseTtlMs: 300,
      wakeWaiter: async (id) => {
        woken.push(id);
      },
    });
    const first = await p.acquire({ buildId: 'b' });
    // The job runs again (its worker stalled) while the first run still holds the lease: the new
    // run takes it over.
    const second = await p.acquire({ buildId: 'b' });
    // Another build waits in this builder's line.
    await assert.rejects(p.acquire({ buildId: 'other' }), NoBuilderAvailableError);
    await first.release();
    assert.ok((await p.leaseExpiry('x', 'b')) !== undefined, "the first run's release left the lease");
    assert.deepEqual(woken, [], 'a release that freed nothing wakes nobody');
    await sleep(400);
    assert.ok((await p.leaseExpiry('x', 'b')) !== undefined, 'the new run renews it');
    await second.release();
    assert.equal(await p.leaseExpiry('x', 'b'), undefined);
    assert.deepEqual(woken, ['other']);
    // The new run ends before the first renews again: the first must not bring the lease back
    // (it renews every third of the TTL).
    const late = await p.acquire({ buildId: 'c' });
    await (await p.acquire({ buildId: 'c' })).release();
    await sleep(400);
    assert.equal(await p.leaseExpiry('x', 'c'), undefined, 'the first run does not bring it back');
    await late.release();
    await (await p.acquire({ buildId: 'other' })).release();
  });

  test('a running build takes its lease back from a run of it that took the lease over but lost the start race', async () => {
    const keyPrefix = prefix();
    const p = pool([{ address: 'x', concurrency: 1 }], { keyPrefix, leaseTtlMs: 300 });
    const holder = () => redis.get(`${keyPrefix}:lease-holder:x:b`);
    const running = await p.acquire({ buildId: 'b' });
    let stopped = 0;
    running.heldFor(
      async () => true,
      () => stopped++,
    );
    // A second job for the build (Redis lost the lease) takes the lease over. Until it has
    // started the build or let it go, the lease stays its own.
    const second = await p.acquire({ buildId: 'b' });
    const secondToken = await holder();
    await sleep(400);
    assert.equal(await holder(), secondToken, 'the running build left the lease to the run holding it');
    // It finds the build started by the first run, and lets the lease go.
    await second.release();
    await sleep(400);
    assert.ok((await p.leaseExpiry('x', 'b')) !== undefined, 'the running build holds its lease again');
    assert.notEqual(await holder(), 'released');
    await assert.rejects(p.acquire({ buildId: 'other' }), NoBuilderAvailableError);
    await running.release();
    assert.equal(await p.leaseExpiry('x', 'b'), undefined);
    assert.equal(stopped, 0, 'a run whose build is its own is not stopped');

    // A run whose build was started again by another run does not take the lease back: it is
    // told to stop.
    const stale = await p.acquire({ buildId: 'c' });
    let lost = 0;
    stale.heldFor(
      async () => false,
      () => lost++,
    );
    await (await p.acquire({ buildId: 'c' })).release();
    await sleep(400);
    assert.equal(await p.leaseExpiry('x', 'c'), undefined);
    assert.equal(lost, 1);
    await stale.release();
    await (await p.acquire({ buildId: 'other' })).release();
  });

  test('a run that found its lease expired (its process was away) asks at every renewal, and stops once its build is no longer its own', async () => {
    const keyPrefix = prefix();
    const p = pool([{ address: 'x', concurrency: 2 }], { keyPrefix, leaseTtlMs: 300 });
    /** What a TTL without renewals does to `id`'s lease. */
    const expire = async (id: string) => {
      await redis.zadd(`${keyPrefix}:leases:x`, 1, id);
      await redis.del(`${keyPrefix}:lease-holder:x:${id}`);
    };
    const mine = await p.acquire({ buildId: 'b' });
    let asked = 0;
    let yours = true;
    let stopped = 0;
    mine.heldFor(
      async () => {
        asked++;
        return yours;
      },
      () => stopped++,
    );
    await sleep(250);
    assert.equal(asked, 0, 'a renewal that finds its lease live asks nothing');
    await expire('b');
    await sleep(250);
    assert.ok(asked >= 1, 'asked once its lease was found expired');
    assert.equal(stopped, 0, 'the build is still its own: it goes on');
    assert.ok((await p.leaseExpiry('x', 'b')) !== undefined, 'its lease re-created');
    // The reconciler takes the build back after that first yes: the next renewals ask again.
    const before = asked;
    await sleep(250);
    assert.ok(asked > before, 'asked again at the next renewals');
    yours = false;
    for (let i = 0; stopped === 0; i++) {
      assert.ok(i < 50, 'never told to stop');
      await sleep(50);
    }

    // Started again elsewhere while this process was away; the first check fails (the database away).
    const away = await p.acquire({ buildId: 'c' });
    const answers: Array<boolean | Error> = [new Error('database unreachable'), false];
    let lost = 0;
    away.heldFor(
      async () => {
        const answer = answers.shift() ?? false;
        if (answer instanceof Error) throw answer;
        return answer;
      },
      () => lost++,
    );
    await expire('c');
    for (let i = 0; lost === 0; i++) {
      assert.ok(i < 50, 'never told to stop');
      await sleep(50);
    }
    assert.deepEqual(answers, [], 'asked again after the failed check');
    await sleep(250);
    assert.equal(lost, 1, 'told once');
    await away.release();
    assert.equal(await p.leaseExpiry('x', 'c'), undefined);
    await mine.release();
  });

  test("a build run again on another builder counts twice in its project's running builds, until one run ends", async () => {
    const p = twoBuilders(2);
    const claim = { projectId: 'proj', projectLimit: 2 };
    const first = await p.acquire({ buildId: 'b', ...claim });
    // The job runs again elsewhere (say the first builder failed it) while the first run still ends.
    const second = await p.acquire({ buildId: 'b', ...claim, avoid: [first.address] });
    assert.notEqual(second.address, first.address);
    await assert.rejects(p.acquire({ buildId: 'c', ...claim }), /runs 2 builds, its limit/);
    // The first run's release leaves the second run counted: one more build of the project fits, not two.
    await first.release();
    const c = await p.acquire({ buildId: 'c', ...claim });
    await assert.rejects(p.acquire({ buildId: 'd', ...claim }), /runs 2 builds, its limit/);
    await second.release();
    await c.release();
  });

  test("a job run again at its project's limit takes over the lease its dead run left, on a full builder", async () => {
    const p = twoBuilders(1);
    const claim = { projectId: 'proj', projectLimit: 1 };
    const first = await p.acquire({ buildId: 'b', ...claim });
    // Its worker died: the lease lives until its TTL. The other builder, asked first for having
    // room, refuses the project at its limit; the full one gives the build its own lease back.
    const again = await p.acquire({ buildId: 'b', ...claim });
    assert.equal(again.address, first.address);
    await again.release();
    await first.release(); // superseded: frees nothing
  });

  test('unhealthy builders are skipped; none healthy is a typed error', async () => {
    const keyPrefix = prefix();
    const f = fakes({ x: 'unreachable', y: 'hang', z: 'ok' });
    const p = pool(
      [
        { address: 'x', concurrency: 4 },
        { address: 'y', concurrency: 4 },
        { address: 'z', concurrency: 1 },
      ],
      { keyPrefix, connectBuilder: f.connectBuilder },
    );
    const t0 = Date.now();
    await p.checkAll();
    assert.ok(Date.now() - t0 < 1500, 'health checks are bounded');
    const status = await p.status();
    assert.deepEqual(
      status.map((s) => [s.address, s.healthy]),
      [
        ['x', false],
        ['y', false],
        ['z', true],
      ],
    );
    assert.match(status[1]?.lastError ?? '', /did not answer within 300 ms/);
    assert.equal((await p.acquire({ buildId: 'h1' })).address, 'z');
    await assert.rejects(p.acquire({ buildId: 'h2' }), {
      name: 'NoBuilderAvailableError',
      reason: 'capacity',
    });

    const down = pool([{ address: 'x', concurrency: 1 }], { keyPrefix, connectBuilder: f.connectBuilder });
    await down.checkAll();
    await assert.rejects(down.acquire({ buildId: 'h3' }), (err: unknown) => {
      assert.ok(err instanceof NoBuilderAvailableError);
      assert.equal(err.reason, 'unhealthy');
      assert.match(err.message, /no healthy builder \(x: cannot reach x\)/);
      return true;
    });
  });

  test('capabilities: a build goes only to a builder that serves it, and waiting for one does not hold back the others', async () => {
    const keyPrefix = prefix();
    const f = fakes({ x: 'ok', y: 'ok' }, { x: ['linux/amd64'], y: ['linux/amd64', 'linux/amd64/v3'] });
    const p = pool(
      [
        { address: 'x', concurrency: 1 },
        { address: 'y', concurrency: 1 },
      ],
      { keyPrefix, connectBuilder: f.connectBuilder },
    );
    const v3 = { platforms: ['linux/amd64/v3'], features: [] };
    const held = await p.acquire({ buildId: 'v3-a', requires: v3 });
    assert.equal(held.address, 'y');
    // v3-b (best rank) waits in y's line; a build that x can run still gets x.
    await assert.rejects(p.acquire({ buildId: 'v3-b', rank: 1, requires: v3 }), { reason: 'capacity' });
    const any = await p.acquire({ buildId: 'any', rank: 2 });
    assert.equal(any.address, 'x');
    await held.release();
    // A worse-ranked build stands aside on y for v3-b, which then gets it.
    await assert.rejects(p.acquire({ buildId: 'late', rank: 3 }), { reason: 'capacity' });
    const v3b = await p.acquire({ buildId: 'v3-b', rank: 1, requires: v3 });
    assert.equal(v3b.address, 'y');
    // 'late' waited in both lines; taking x takes it out of y's line too.
    await any.release();
    assert.equal((await p.acquire({ buildId: 'late', rank: 3 })).address, 'x');
    await v3b.release();
    assert.equal((await p.acquire({ buildId: 'later', rank: 4 })).address, 'y');

    await assert.rejects(
      p.acquire({ buildId: 'arm', requires: { platforms: ['linux/arm64'], features: ['exporter:oci'] } }),
      (err: unknown) => {
        assert.ok(err instanceof NoCapableBuilderError);
        assert.equal(err.code, 'no_capable_builder');
        assert.match(err.message, /x lacks platform linux\/arm64; y lacks platform linux\/arm64/);
        return true;
      },
    );
  });

  test('a failed builder gets a new client; the old one closes when its last build ends', async () => {
    const keyPrefix = prefix();
    const f = fakes({ x: 'ok' });
    const p = pool([{ address: 'x', concurrency: 2 }], { keyPrefix, connectBuilder: f.connectBuilder });
    const lease = await p.acquire({ buildId: 'c1' });
    const first = await lease.client();
    assert.equal(f.dials.x, 1);
    p.reportFailure('x', new Error('lost it'));
    await p.probe('x');
    assert.equal(f.dials.x, 2);
    assert.notEqual(await p.clientFor('x'), first);
    assert.deepEqual(f.closed, [], 'still used by the running build');
    await lease.release();
    assert.deepEqual(f.closed, ['x']);
  });
});
