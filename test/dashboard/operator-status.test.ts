// The operator's status page on a real Kiln (API and worker, PostgreSQL, Redis, dockerd's
// BuildKit): the API samples builds waiting and builder slots into the per-minute stats,
// GET /v1/admin/stats serves them with every project's figures behind KILN_OPERATOR_TOKEN, the
// dashboard signed in with that token draws them (headless Chromium, screenshots read back), and a
// project token sees neither the operator's view nor another project's figures.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import fs from 'node:fs/promises';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { readOperatorStats, recordSample } from '@kiln/core';
import type { Browser, Page } from 'playwright-core';
import { busyboxPath, makeContext } from '../../packages/buildkit-client/test-support/context.js';
import { startTestKiln, type TestKiln, waitForStatus } from '../support/kiln.js';
import { openPage } from './browser.js';

const SCREENSHOTS = path.resolve(import.meta.dirname, '../../test-artifacts/dashboard');
const OPERATOR = 'o'.repeat(40);
const WAIT = { timeout: 60_000 };
const FINAL = ['succeeded', 'failed', 'canceled'];
// Each build holds the one builder slot for 3 s, so the next ones wait where the sampler sees them.
const DOCKERFILE = [
  'FROM scratch',
  'COPY busybox /bin/busybox',
  'ARG N=0',
  'RUN ["/bin/busybox", "sh", "-c", "/bin/busybox sleep 3 && /bin/busybox mkdir -p /out && echo $N > /out/n"]',
  '',
].join('\n');

interface OperatorMinute {
  finished: Record<string, number>;
  waiting: number | null;
  running: number | null;
  slotsUsed: number | null;
  slotsCapacity: number | null;
}
interface OperatorStats {
  minutes: OperatorMinute[];
  projects: { id: string; name: string | null; finished: Record<string, number> }[];
}

describe('operator status', () => {
  let kiln: TestKiln;
  let betaToken: string;
  /** A fetch body under the DOM's types, which take no Buffer (its memory may be shared). */
  let tar: Uint8Array<ArrayBuffer>;
  let browser: Browser;
  let page: Page;
  const cspViolations: string[] = [];
  const pageErrors: string[] = [];

  const call = (p: string, token: string | undefined, init: RequestInit = {}) => {
    const headers = new Headers(init.headers);
    if (token) headers.set('authorization', `Bearer ${token}`);
    return fetch(`${kiln.url}${p}`, { ...init, headers });
  };
  const operatorStats = async (): Promise<OperatorStats> => {
    const res = await call('/v1/admin/stats?hours=1', OPERATOR);
    assert.equal(res.status, 200, await res.clone().text());
    return (await res.json()) as OperatorStats;
  };
  const peak = (minutes: OperatorMinute[], key: 'waiting' | 'running' | 'slotsUsed' | 'slotsCapacity') =>
    Math.max(-1, ...minutes.map((m) => m[key] ?? -1));
  /** Polls the operator's stats until `done` holds (bounded: the sampler runs every second). */
  const statsUntil = async (done: (s: OperatorStats) => boolean, what: string): Promise<OperatorStats> => {
    const end = Date.now() + WAIT.timeout;
    for (;;) {
      const stats = await operatorStats();
      if (done(stats)) return stats;
      if (Date.now() > end) throw new Error(`${what}: ${JSON.stringify(stats.minutes.slice(-2))}`);
      await new Promise((r) => setTimeout(r, 200));
    }
  };
  const totals = (minutes: { finished: Record<string, number> }[]) =>
    Object.fromEntries(FINAL.map((k) => [k, minutes.reduce((sum, m) => sum + (m.finished[k] ?? 0), 0)]));
  const screenshot = async (name: string) => {
    const file = path.join(SCREENSHOTS, `${name}.png`);
    await page.screenshot({ path: file, fullPage: true });
    console.log(`screenshot: ${file}`);
    // Read back: a PNG of the page's width, taller than the header alone.
    const png = await fs.readFile(file);
    assert.equal(png.subarray(1, 4).toString('latin1'), 'PNG');
    assert.equal(png.readUInt32BE(16), 1280);
    return png.readUInt32BE(20);
  };
  const signIn = async (token: string) => {
    await page.goto(`${kiln.url}/ui/`);
    await page.locator('#token').fill(token);
    await page.getByRole('button', { name: 'Sign in' }).click();
  };

  before(async () => {
    await fs.mkdir(SCREENSHOTS, { recursive: true });
    kiln = await startTestKiln({
      worker: true,
      project: 'ops-alpha',
      env: {
        KILN_OPERATOR_TOKEN: OPERATOR,
        KILN_STATS_SAMPLE_SECONDS: '1',
        KILN_BUILDER_CONCURRENCY: '1',
        KILN_WORKER_CONCURRENCY: '1',
      },
    });
    betaToken = await kiln.newToken('ops-beta');
    const ctx = await makeContext({
      Dockerfile: DOCKERFILE,
      busybox: { content: await fs.readFile(busyboxPath()), mode: 0o755 },
    });
    try {
      tar = new Uint8Array(execFileSync('tar', ['-C', ctx.dir, '-czf', '-', '.']));
    } finally {
      await ctx.cleanup();
    }
    ({ browser, page } = await openPage(pageErrors, cspViolations));
  });
  after(async () => {
    await browser?.close().catch((err) => console.error('closing chromium:', err));
    await kiln?.stop();
  });

  test('builds waiting and builder slots are sampled minute by minute as the queue fills', async () => {
    // The worker's first health check makes the builder's one slot usable.
    await statsUntil((s) => peak(s.minutes, 'slotsCapacity') === 1, 'the builder never became usable');
    const ids: string[] = [];
    for (let i = 0; i < 3; i++) {
      const res = await call(
        `/v1/builds?output=type=tar,dest=n.tar&network=none&build-arg=N=${randomUUID()}`,
        kiln.token,
        { method: 'POST', body: tar, headers: { 'content-type': 'application/gzip' } },
      );
      assert.equal(res.status, 202, await res.clone().text());
      ids.push(((await res.json()) as { id: string }).id);
    }
    // One build holds the slot for 3 s while two wait: the samples see both.
    const stats = await statsUntil(
      (s) => peak(s.minutes, 'waiting') >= 2 && peak(s.minutes, 'slotsUsed') === 1,
      'no sample saw the queue',
    );
    assert.ok(peak(stats.minutes, 'waiting') <= 3, JSON.stringify(stats.minutes.slice(-2)));
    assert.equal(peak(stats.minutes, 'running'), 1);
    assert.equal(peak(stats.minutes, 'slotsCapacity'), 1);
    // Minutes without a sample say so (null), not 0: the hour began before this Kiln did.
    assert.equal(stats.minutes.length, 60);
    assert.equal(stats.minutes[0]?.waiting, null);
    // The waiting ones are canceled (they need not take 3 s each); all three end.
    for (const id of ids.slice(1)) await call(`/v1/builds/${id}/cancel`, kiln.token, { method: 'POST' });
    for (const id of ids) await waitForStatus((p) => call(p, kiln.token), id, FINAL, WAIT.timeout);
  });

  test('the operator sees every project; a project token sees its own figures and never the operator’s', async () => {
    const stats = await statsUntil(
      (s) => Object.values(totals(s.minutes)).reduce((a, b) => a + b, 0) === 3,
      'the three builds were not counted',
    );
    const own = async (token: string) => {
      const res = await call('/v1/stats?hours=1', token);
      assert.equal(res.status, 200);
      return totals(((await res.json()) as { minutes: OperatorMinute[] }).minutes);
    };
    const alpha = stats.projects.find((p) => p.name === 'ops-alpha');
    assert.ok(alpha, JSON.stringify(stats.projects));
    assert.deepEqual(totals([alpha]), totals(stats.minutes));
    assert.deepEqual(await own(kiln.token), totals(stats.minutes));
    assert.deepEqual(await own(betaToken), { succeeded: 0, failed: 0, canceled: 0 });
    // The project's view carries none of the operator's samples.
    const minute = ((await (await call('/v1/stats?hours=1', kiln.token)).json()) as { minutes: object[] })
      .minutes[0];
    assert.deepEqual(Object.keys(minute ?? {}).sort(), [
      'at',
      'cacheHits',
      'cacheMisses',
      'durationP50',
      'durationP90',
      'finished',
    ]);
    for (const token of [kiln.token, betaToken, undefined]) {
      const res = await call('/v1/admin/stats', token);
      assert.equal(res.status, 401);
      assert.equal(((await res.json()) as { error: { code: string } }).error.code, 'unauthorized');
    }
    assert.equal((await call('/v1/stats', OPERATOR)).status, 401);
    assert.equal((await call('/v1/admin/stats?hours=25', OPERATOR)).status, 400);
  });

  test('the dashboard signed in with the operator token charts the queue, the builders and each project', async () => {
    const stats = await operatorStats();
    await signIn(OPERATOR);
    await page.waitForURL(/#\/status$/, WAIT);
    await page.waitForSelector('#chart-queue circle.waiting', WAIT);
    // No named functions inside: tsx's helpers do not exist in the page.
    const drawn = await page.evaluate(() => ({
      waiting: [...document.querySelectorAll('#chart-queue circle.waiting')].map((c) =>
        Number(c.getAttribute('data-value')),
      ),
      used: [...document.querySelectorAll('#chart-slots circle.used')].map((c) =>
        Number(c.getAttribute('data-value')),
      ),
      capacity: document.querySelectorAll('#chart-slots circle.capacity').length,
      alpha: [...document.querySelectorAll('#projects tr[data-project="ops-alpha"] td[data-outcome]')].map(
        (td) => Number(td.textContent),
      ),
      navBuilds: (document.querySelector('nav a[href="#/builds"]') as HTMLElement | null)?.hidden,
    }));
    assert.equal(Math.max(...drawn.waiting), peak(stats.minutes, 'waiting'));
    assert.equal(Math.max(...drawn.used), 1);
    assert.ok(drawn.capacity >= 1);
    assert.deepEqual(drawn.alpha, Object.values(totals(stats.minutes)));
    assert.equal(drawn.navBuilds, true);
    assert.ok((await screenshot('operator-status')) > 900, 'the operator page runs past one screen');
    assert.deepEqual(cspViolations, []);
  });

  test('a project token on the dashboard gets its own status page; claiming the operator role signs it out', async () => {
    await page.locator('#sign-out').click();
    await signIn(kiln.token);
    await page.waitForURL(/#\/builds$/, WAIT);
    await page.goto(`${kiln.url}/ui/#/status`);
    await page.waitForSelector('#chart-builds', WAIT);
    assert.equal(await page.locator('#chart-queue, #chart-slots, #projects').count(), 0);
    await screenshot('project-status');
    // The role in the tab only picks pages: the API refuses the project token the operator's figures.
    await page.evaluate(() => sessionStorage.setItem('kiln.role', 'operator'));
    await page.reload();
    await page.locator('#login').waitFor(WAIT);
    assert.match((await page.locator('#login-error').textContent()) ?? '', /KILN_OPERATOR_TOKEN/);
    assert.deepEqual(pageErrors, []);
    assert.deepEqual(cspViolations, []);
  });

  test('API replicas sampling the same figures keep the peak, never a sum', async () => {
    const before = peak((await readOperatorStats(kiln.redis, 2)).minutes, 'waiting');
    const high = Math.max(before, 0) + 5;
    // Two replicas' samples of one moment, then a later, lower one.
    for (const waiting of [high, high, 1])
      await recordSample(kiln.redis, { waiting, running: 0, slotsUsed: 0, slotsCapacity: 1 });
    assert.equal(peak((await readOperatorStats(kiln.redis, 2)).minutes, 'waiting'), high);
  });
});
