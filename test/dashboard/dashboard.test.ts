// The dashboard (/ui/) end to end in headless Chromium: a real API and worker, real builds on the
// private dockerd. Screenshots go to test-artifacts/dashboard/ (gitignored); their paths are printed.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import fs from 'node:fs/promises';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import type { Browser, Page } from 'playwright-core';
import { busyboxPath, makeContext } from '../../packages/buildkit-client/test-support/context.js';
import { startTestKiln, type TestKiln } from '../support/kiln.js';
import { openPage } from './browser.js';

const socket = process.env.KILN_TEST_DOCKER_SOCK;
if (!socket) throw new Error('KILN_TEST_DOCKER_SOCK is not set: run through `npm test`');

const SCREENSHOTS = path.resolve(import.meta.dirname, '../../test-artifacts/dashboard');
const WAIT = { timeout: 120_000 };

const RUN = (script: string) => `RUN ["/bin/busybox", "sh", "-c", ${JSON.stringify(script)}]`;
/** A build running `script` in a busybox stage; the artifact is what it leaves in /out. */
const dockerfile = (script: string) =>
  [
    'FROM scratch AS work',
    'COPY busybox /bin/busybox',
    'COPY nonce /nonce',
    RUN(script),
    'FROM scratch',
    'COPY --from=work /out /',
    '',
  ].join('\n');
const XSS_SCRIPT = '<script>window.__kilnXss = 1</script>';
const XSS_IMG = '<img src=x onerror="window.__kilnXss = 2">';

interface BuildJson {
  id: string;
  status: string;
  error?: { code: string; message: string };
  artifact?: { url: string; size: number; digest: string; filename: string };
}

describe('dashboard', () => {
  let kiln: TestKiln;
  let browser: Browser;
  let page: Page;
  let busybox: Buffer;
  let nonce = 0;
  const pageErrors: string[] = [];
  const cspViolations: string[] = [];

  const api = (p: string, init: RequestInit = {}) => {
    const headers = new Headers(init.headers);
    headers.set('authorization', `Bearer ${kiln.token}`);
    return fetch(`${kiln.url}${p}`, { ...init, headers, redirect: 'manual' });
  };
  const submit = async (script: string, dest: string): Promise<BuildJson> => {
    const ctx = await makeContext({
      busybox: { content: busybox, mode: 0o755 },
      // Every build its own context: none is answered from the result cache.
      nonce: `${process.pid}-${Date.now()}-${nonce++}\n`,
      Dockerfile: dockerfile(script),
    });
    try {
      const res = await api(`/v1/builds?output=type=tar,dest=${dest}&network=none`, {
        method: 'POST',
        body: execFileSync('tar', ['-C', ctx.dir, '-czf', '-', '.']),
        headers: { 'content-type': 'application/gzip' },
      });
      assert.equal(res.status, 202, await res.clone().text());
      return (await res.json()) as BuildJson;
    } finally {
      await ctx.cleanup();
    }
  };
  const waitFor = async (id: string, statuses: string[]): Promise<BuildJson> => {
    const end = Date.now() + WAIT.timeout;
    for (;;) {
      const b = (await (await api(`/v1/builds/${id}`)).json()) as BuildJson;
      if (statuses.includes(b.status)) return b;
      if (Date.now() > end) throw new Error(`build ${id} still ${b.status}`);
      await new Promise((r) => setTimeout(r, 250));
    }
  };
  const screenshot = async (name: string) => {
    const file = path.join(SCREENSHOTS, `${name}.png`);
    await page.screenshot({ path: file, fullPage: true });
    console.log(`screenshot: ${file}`);
  };
  const waitForStatus = (status: string) =>
    page.waitForFunction(
      (s) => document.querySelector('[data-field="Status"] .badge')?.textContent === s,
      status,
      WAIT,
    );
  const logText = () => page.locator('#log').textContent();
  const waitForLog = (text: string) =>
    page.waitForFunction((t) => document.getElementById('log')?.textContent?.includes(t), text, WAIT);
  const signIn = async (token: string) => {
    await page.goto(`${kiln.url}/`);
    await page.locator('#token').fill(token);
    await page.getByRole('button', { name: 'Sign in' }).click();
  };

  before(async () => {
    busybox = await fs.readFile(busyboxPath());
    await fs.mkdir(SCREENSHOTS, { recursive: true });
    kiln = await startTestKiln({ worker: true, project: 'dashboard' });
    ({ browser, page } = await openPage(pageErrors, cspViolations));
  });
  after(async () => {
    // Each on its own: a failed close must not keep the other from running.
    await browser?.close().catch((err) => console.error('closing chromium:', err));
    await kiln?.stop();
  });

  test('serves its own files only, with a strict Content-Security-Policy', async () => {
    const root = await fetch(`${kiln.url}/`, { redirect: 'manual' });
    assert.equal(root.status, 302);
    assert.equal(root.headers.get('location'), '/ui/');
    const index = await fetch(`${kiln.url}/ui/`);
    assert.equal(index.status, 200);
    assert.equal(index.headers.get('content-type'), 'text/html; charset=utf-8');
    const csp = index.headers.get('content-security-policy') ?? '';
    assert.match(csp, /script-src 'self'(;|$)/);
    assert.match(csp, /default-src 'none'/);
    assert.doesNotMatch(await index.text(), /<script>|\son\w+=/, 'no inline script or handler');
    const js = await fetch(`${kiln.url}/ui/app.js`);
    assert.equal(js.headers.get('content-type'), 'text/javascript; charset=utf-8');
    assert.equal(js.headers.get('x-content-type-options'), 'nosniff');
    for (const p of [
      '/ui/..%2Fpackage.json',
      '/ui/%2e%2e/src/main.ts',
      '/ui/../package.json',
      '/ui/constructor',
    ]) {
      const res = await fetch(`${kiln.url}${p}`);
      assert.equal(res.status, 404, p);
      assert.equal(((await res.json()) as { error: { code: string } }).error.code, 'not_found');
    }
  });

  test('a bad token is refused on the sign-in form', async () => {
    await signIn('not-a-real-token-at-all');
    const error = page.locator('#login-error');
    await page.waitForFunction(() => document.getElementById('login-error')?.textContent !== '', null, WAIT);
    assert.match((await error.textContent()) ?? '', /unknown or revoked/);
    assert.equal(await page.evaluate(() => sessionStorage.getItem('kiln.token')), null);
    await screenshot('bad-token');
  });

  let succeeded: BuildJson;
  let failed: BuildJson;

  test('signs in, lists the builds with their state and filters them by status', async () => {
    [succeeded, failed] = await Promise.all([
      submit('echo quick; /bin/busybox mkdir -p /out; echo ok > /out/ok.txt', 'quick.tar'),
      submit(`echo '${XSS_SCRIPT}'; echo '${XSS_IMG}'; exit 3`, 'broken.tar'),
    ]);
    assert.equal((await waitFor(succeeded.id, ['succeeded', 'failed'])).status, 'succeeded');
    assert.equal((await waitFor(failed.id, ['succeeded', 'failed'])).status, 'failed');

    await signIn(kiln.token);
    const row = (id: string) => page.locator(`#builds tr[data-id="${id}"]`);
    await row(succeeded.id).waitFor(WAIT);
    await row(failed.id).waitFor(WAIT);
    assert.equal(await row(succeeded.id).locator('.badge').textContent(), 'succeeded');
    assert.equal(await row(failed.id).locator('.badge').textContent(), 'failed');
    await screenshot('builds');

    await page.locator('#status-filter').selectOption('failed');
    await page.waitForURL(/#\/builds\?status=failed$/);
    await row(succeeded.id).waitFor({ state: 'detached', ...WAIT });
    await row(failed.id).waitFor(WAIT);
    const statuses = await page
      .locator('#builds tbody tr')
      .evaluateAll((rows) => rows.map((r) => r.getAttribute('data-status')));
    assert.deepEqual([...new Set(statuses)], ['failed']);
    await screenshot('builds-failed');

    await page.locator('#status-filter').selectOption('succeeded');
    await row(failed.id).waitFor({ state: 'detached', ...WAIT });
    await row(succeeded.id).waitFor(WAIT);
  });

  test("a failed build's log and error are shown as text, never as markup", async () => {
    await page.locator('#status-filter').selectOption('');
    await page.locator(`#builds a[href="#/builds/${failed.id}"]`).click();
    await waitForLog(XSS_IMG);
    const log = (await logText()) ?? '';
    assert.ok(log.includes(XSS_SCRIPT), log);
    assert.equal(await page.locator('#log *').count(), 0, 'the log holds text nodes only');
    assert.equal(await page.locator('main img, main script').count(), 0);
    assert.equal(await page.evaluate(() => (window as { __kilnXss?: number }).__kilnXss), undefined);
    await waitForStatus('failed');
    assert.match((await page.locator('[data-field="Error"]').textContent()) ?? '', /\S/);
    assert.ok(await page.locator('#cancel').isHidden());
    assert.ok(await page.locator('#download').isHidden());
    await screenshot('build-failed');
  });

  test("a finished build's page shows its steps as a timeline, as the API lists them, names as text", async () => {
    interface Step {
      name: string;
      cached: boolean;
      error: string | null;
    }
    const { items, omitted } = (await (await api(`/v1/builds/${failed.id}/steps`)).json()) as {
      items: Step[];
      omitted: number;
    };
    assert.equal(omitted, 0);
    assert.ok(
      items.some((st) => st.error !== null && st.name.includes('RUN')),
      JSON.stringify(items),
    );
    assert.ok(items.some((st) => st.error === null));
    // The page is the failed build's (previous test); its timeline appears once it has ended.
    await page.locator('#timeline rect.failed').waitFor(WAIT);
    const kinds = await page
      .locator('#timeline rect')
      .evaluateAll((rs) => rs.map((r) => r.getAttribute('data-kind')));
    assert.deepEqual(
      kinds,
      items.map((st) => (st.error ? 'failed' : st.cached ? 'cached' : 'run')),
    );
    assert.equal(await page.locator('#timeline text.step').count(), items.length);
    assert.equal(await page.locator('#steps-omitted').count(), 0);
    // The RUN's name holds the build's <script> and <img onerror>: text in the SVG, never markup.
    assert.equal(await page.locator('#timeline script, #timeline img, main img, main script').count(), 0);
    assert.equal(await page.evaluate(() => (window as { __kilnXss?: number }).__kilnXss), undefined);
    assert.equal(
      (await (await api('/v1/builds/01NOSUCHBUILD0000000000000/steps')).json()).error.code,
      'not_found',
    );
    await screenshot('build-steps');
    const png = await fs.readFile(path.join(SCREENSHOTS, 'build-steps.png'));
    assert.equal(png.subarray(1, 4).toString('latin1'), 'PNG');
    assert.equal(png.readUInt32BE(16), 1280);
  });

  test('follows a running build live, then downloads its artifact', async () => {
    const build = await submit(
      // $T: the command line (which the log shows too) must not hold the words the output prints.
      'T=tick; echo $T-1; /bin/busybox sleep 6; echo $T-2; /bin/busybox sleep 6; echo $T-done; ' +
        '/bin/busybox mkdir -p /out; /bin/busybox seq 1 20000 > /out/numbers.txt',
      'numbers.tar',
    );
    await page.goto(`${kiln.url}/ui/#/builds/${build.id}`);
    await waitForLog('tick-1');
    // Seen while the build still runs: the log is followed, not read after the end.
    assert.equal(((await (await api(`/v1/builds/${build.id}`)).json()) as BuildJson).status, 'running');
    assert.ok(!((await logText()) ?? '').includes('tick-done'));
    await waitForStatus('running');
    assert.ok(await page.locator('#cancel').isVisible());
    await screenshot('build-running');

    await waitForLog('tick-done');
    await waitForStatus('succeeded');
    await page.locator('#download').waitFor(WAIT);
    assert.ok(await page.locator('#cancel').isHidden());
    await screenshot('build-succeeded');

    const [download] = await Promise.all([
      page.waitForEvent('download', WAIT),
      page.locator('#download').click(),
    ]);
    assert.equal(download.suggestedFilename(), 'numbers.tar');
    const bytes = await fs.readFile(await download.path());
    const done = await waitFor(build.id, ['succeeded']);
    assert.ok(done.artifact);
    assert.equal(bytes.length, done.artifact.size);
    assert.equal(`sha256:${createHash('sha256').update(bytes).digest('hex')}`, done.artifact.digest);
  });

  test('cancels a running build from its page', async () => {
    const build = await submit('W=wait; echo "$W"ing; /bin/busybox sleep 300', 'never.tar');
    await page.goto(`${kiln.url}/ui/#/builds/${build.id}`);
    await waitForLog('waiting');
    await page.locator('#cancel').click();
    await waitForStatus('canceled');
    assert.equal((await waitFor(build.id, ['canceled', 'failed', 'succeeded'])).status, 'canceled');
    assert.ok(await page.locator('#cancel').isHidden());
    await screenshot('build-canceled');
  });

  test('the builders page shows the test dockerd healthy', async () => {
    await page.getByRole('link', { name: 'Builders' }).click();
    const row = page.locator('#builders tbody tr[data-health="healthy"]');
    await row.waitFor(WAIT);
    assert.equal(await row.locator('td').first().textContent(), `docker://${socket}`);
    assert.match((await row.locator('td').nth(2).textContent()) ?? '', /^\d+ \/ \d+$/);
    // dockerd 20.10 has no Control.Info; its moby worker exports tar (no oci/docker).
    assert.equal(await row.locator('td').nth(4).textContent(), '< 0.11');
    assert.match(
      (await row.locator('td').nth(5).textContent()) ?? '',
      /^linux\/amd64, .*cache-export:inline$/,
    );
    await screenshot('builders');
  });

  test('the status page charts the last hours minute by minute: builds by outcome, duration percentiles', async () => {
    interface Minute {
      finished: Record<string, number>;
      durationP50: number | null;
      cacheHits: number;
      cacheMisses: number;
    }
    const outcomes = ['succeeded', 'failed', 'canceled'];
    const totals = (minutes: Minute[]) =>
      Object.fromEntries(outcomes.map((k) => [k, minutes.reduce((sum, m) => sum + (m.finished[k] ?? 0), 0)]));
    // The canceled build's worker records it right after the row says so: wait for it.
    let minutes: Minute[] = [];
    for (let i = 0; i < 100; i++) {
      ({ minutes } = (await (await api('/v1/stats?hours=6')).json()) as { minutes: Minute[] });
      if ((totals(minutes).canceled ?? 0) > 0) break;
      await new Promise((r) => setTimeout(r, 100));
    }
    assert.equal(minutes.length, 360);
    const expected = totals(minutes);
    assert.ok((expected.succeeded ?? 0) >= 2 && (expected.failed ?? 0) >= 1 && (expected.canceled ?? 0) >= 1);
    assert.ok(minutes.some((m) => m.durationP50 !== null));
    assert.equal((await api('/v1/stats?hours=0')).status, 400);

    await page.goto(`${kiln.url}/ui/#/status`);
    await page.waitForSelector('#chart-builds rect.canceled', WAIT);
    // No named functions inside: tsx's helpers do not exist in the page.
    const drawn = await page.evaluate(
      (keys) => ({
        counts: keys.map((k) =>
          [...document.querySelectorAll(`#chart-builds rect.${k}`)].map((r) =>
            Number(r.getAttribute('data-count')),
          ),
        ),
        p50: document.querySelectorAll('#chart-durations circle.p50').length,
        p90: document.querySelectorAll('#chart-durations circle.p90').length,
        hits: [...document.querySelectorAll('#chart-cache circle.hits')].map((c) =>
          Number(c.getAttribute('data-value')),
        ),
        summary: document.getElementById('status-summary')?.textContent ?? '',
      }),
      outcomes,
    );
    const drawnTotals = Object.fromEntries(
      outcomes.map((k, i) => [k, (drawn.counts[i] ?? []).reduce((a, b) => a + b, 0)]),
    );
    assert.deepEqual(drawnTotals, expected);
    assert.ok(drawn.p50 >= 1 && drawn.p90 >= 1, JSON.stringify(drawn));
    // One point per minute with look-ups: the share answered from the result cache.
    const ratios = minutes
      .filter((m) => m.cacheHits + m.cacheMisses > 0)
      .map((m) => Math.round((100 * m.cacheHits) / (m.cacheHits + m.cacheMisses)));
    assert.ok(ratios.length >= 1, 'the builds above looked the result cache up');
    assert.deepEqual(drawn.hits, ratios);
    assert.match(drawn.summary, new RegExp(`${expected.succeeded} succeeded, ${expected.failed} failed`));
    await screenshot('status');
    // Read back: a PNG of the page's width, taller than the charts alone.
    const png = await fs.readFile(path.join(SCREENSHOTS, 'status.png'));
    assert.equal(png.subarray(1, 4).toString('latin1'), 'PNG');
    assert.equal(png.readUInt32BE(16), 1280);
    assert.ok(png.readUInt32BE(20) > 400, `height ${png.readUInt32BE(20)}`);
    assert.deepEqual(cspViolations, []);
  });

  test('signing out forgets the token', async () => {
    await page.locator('#sign-out').click();
    await page.locator('#login').waitFor(WAIT);
    assert.equal(await page.evaluate(() => sessionStorage.getItem('kiln.token')), null);
    assert.deepEqual(pageErrors, []);
    assert.deepEqual(cspViolations, []);
  });
});
