// The gauges the autoscalers read (apps/api/src/builder-metrics.ts), against a worker process and a
// real dockerd: builds waiting and running, builder slots used and free, builders by health and
// draining, as builds start, queue up behind a full builder and the builder is drained.
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { testRedisUrl } from '../../packages/core/test-support/services.js';
import {
  busyboxContext,
  FINAL,
  scriptDockerfile,
  testBuilders,
  tgz,
  waitUntil,
  withKiln,
} from '../support/processes.js';

const METRICS_TOKEN = 'm'.repeat(40);
const DRAIN_TOKEN = 'd'.repeat(40);
const QUERY = 'output=type=tar,dest=o.tar&network=none&noCache=true&build-arg=N%3D';

describe('autoscaling metrics', () => {
  test('waiting, running, slots and builder health follow the builds', { timeout: 180_000 }, async () => {
    const { D1 } = testBuilders();
    const ctx = await busyboxContext(
      scriptDockerfile('/bin/busybox sleep $N; /bin/busybox mkdir -p /out; echo done > /out/r.txt'),
    );
    const body = await tgz(ctx.dir);
    await withKiln(
      {
        project: 'metrics',
        redisUrl: testRedisUrl(),
        env: {
          KILN_BUILDERS: `${D1}=2`,
          KILN_METRICS_TOKEN: METRICS_TOKEN,
          KILN_BUILDER_DRAIN_TOKEN: DRAIN_TOKEN,
        },
        release: [() => ctx.cleanup()],
      },
      async ({ api: a, spawn }) => {
        const scrape = async (): Promise<Record<string, number>> => {
          const res = await fetch(`${a.base}/metrics`, {
            headers: { authorization: `Bearer ${METRICS_TOKEN}` },
          });
          assert.equal(res.status, 200);
          const text = await res.text();
          return Object.fromEntries(
            [
              ...text.matchAll(
                /^(kiln_builds_waiting|kiln_builds_running|kiln_builder_\w+|kiln_builders_\w+) (\d+)$/gm,
              ),
            ].map((m) => [m[1] as string, Number(m[2])]),
          );
        };
        const until = (what: string, want: Record<string, number>) =>
          waitUntil(
            `${what}: ${JSON.stringify(want)}`,
            async () => {
              const m = await scrape();
              return Object.entries(want).every(([k, v]) => m[k] === v);
            },
            60_000,
          );

        // Before any worker: the builder is unknown, nothing waits, no slot is free.
        assert.deepEqual(await scrape(), {
          kiln_builds_waiting: 0,
          kiln_builds_running: 0,
          kiln_builder_slots_used: 0,
          kiln_builder_slots_free: 0,
          kiln_builders_healthy: 0,
          kiln_builders_unhealthy: 0,
          kiln_builders_unknown: 1,
          kiln_builders_draining: 0,
        });
        // Queued with no worker: the job waits (BullMQ `prioritized`, as every build has a priority).
        const builds = [await a.submit(body, `${QUERY}30`)];
        await until('one build waits', { kiln_builds_waiting: 1 });

        spawn('w1');
        await until('the worker runs it', {
          kiln_builders_healthy: 1,
          kiln_builds_waiting: 0,
          kiln_builds_running: 1,
          kiln_builder_slots_used: 1,
          kiln_builder_slots_free: 1,
        });
        // Three more: one takes the last slot, two wait (handed back: BullMQ `delayed`).
        for (let i = 0; i < 3; i++) builds.push(await a.submit(body, `${QUERY}30`));
        await until('the builder is full', {
          kiln_builds_waiting: 2,
          kiln_builder_slots_used: 2,
          kiln_builder_slots_free: 0,
        });

        const drain = await fetch(`${a.base}/v1/builders/drain`, {
          method: 'POST',
          headers: { authorization: `Bearer ${DRAIN_TOKEN}`, 'content-type': 'application/json' },
          body: JSON.stringify({ address: D1, seconds: 60 }),
        });
        assert.equal(drain.status, 200);
        const m = await scrape();
        assert.equal(m.kiln_builders_draining, 1);
        assert.equal(m.kiln_builder_slots_free, 0);

        for (const b of builds) await a.api(`/v1/builds/${b.id}/cancel`, { method: 'POST' });
        for (const b of builds) await a.waitFor(b.id, FINAL, 60_000);
        await until('every build is over', {
          kiln_builds_waiting: 0,
          kiln_builds_running: 0,
          kiln_builder_slots_used: 0,
        });
        // Draining, the builder offers no slot even when empty.
        assert.equal((await scrape()).kiln_builder_slots_free, 0);
      },
    );
  });
});
