// /metrics on a real Kiln (API and worker on PostgreSQL, Redis and dockerd's BuildKit): the
// histograms, gauges and counters an operator alerts on move with real builds, projects past
// KILN_METRICS_MAX_PROJECTS share `other`, and every query of the example alert rules and
// Grafana dashboard under deploy/observability names metrics and labels this /metrics has.
import assert from 'node:assert/strict';
import fs from 'node:fs/promises';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { after, before, test } from 'node:test';
import { parse } from 'yaml';
import { startTestKiln, type TestKiln, waitForStatus } from '../support/kiln.js';
import { contextTar, runNonce } from './context.js';
import { missingFrom, parseScrape } from './promql.js';

const METRICS_TOKEN = 'm'.repeat(40);
let kiln: TestKiln;
let receiver: Server;
let received = 0;
let tar: Buffer;

const call = (path: string, token: string, init: RequestInit = {}) =>
  fetch(`${kiln.url}${path}`, {
    ...init,
    headers: { authorization: `Bearer ${token}`, ...(init.headers as Record<string, string>) },
  });
const scrape = async () => {
  const res = await call('/metrics', METRICS_TOKEN);
  assert.equal(res.status, 200);
  return res.text();
};
/** The sample line of `series` (labels in prom-client's order), if any. */
const lineOf = (text: string, series: string) => text.split('\n').find((l) => l.startsWith(`${series} `));
const sample = (text: string, series: string): number => {
  const found = lineOf(text, series);
  assert.ok(found, `no sample ${series} in\n${text}`);
  return Number(found.slice(series.length + 1));
};
const build = async (token: string, n: number) => {
  const res = await call(
    `/v1/builds?output=type=tar,dest=n.tar&network=none&build-arg=N=metrics-${runNonce}-${n}`,
    token,
    {
      method: 'POST',
      body: tar,
      headers: { 'content-type': 'application/gzip' },
    },
  );
  assert.ok(res.ok, await res.clone().text());
  const { id } = (await res.json()) as { id: string };
  return waitForStatus<{ status: string; error?: unknown }>(
    (p) => call(p, token),
    id,
    ['succeeded', 'failed', 'canceled'],
    120_000,
  );
};

before(async () => {
  receiver = createServer((_req, res) => {
    received += 1;
    res.writeHead(204).end();
  });
  await new Promise<void>((resolve) => receiver.listen(0, '127.0.0.1', resolve));
  kiln = await startTestKiln({
    worker: true,
    project: 'alpha',
    env: { KILN_METRICS_TOKEN: METRICS_TOKEN, KILN_METRICS_MAX_PROJECTS: '1' },
  });
  tar = await contextTar();
  const port = (receiver.address() as AddressInfo).port;
  const endpoint = await call('/v1/endpoints', kiln.token, {
    method: 'POST',
    body: JSON.stringify({ url: `http://127.0.0.1:${port}/hook` }),
    headers: { 'content-type': 'application/json' },
  });
  assert.equal(endpoint.status, 201, await endpoint.clone().text());
});
after(async () => {
  await kiln?.stop();
  receiver?.close();
});

test('builds move the histograms by outcome and project, the cache and delivery counters, the HTTP histogram', async () => {
  // alpha: a build, one with another build arg (BuildKit has its first steps), the first again
  // (the result cache answers it); beta, the second project, is past KILN_METRICS_MAX_PROJECTS=1.
  for (const [token, n] of [
    [kiln.token, 1],
    [kiln.token, 2],
    [kiln.token, 1],
    [await kiln.newToken('beta'), 3],
  ] as const) {
    const done = await build(token, n);
    assert.equal(done.status, 'succeeded', JSON.stringify(done.error));
  }
  // The worker records a build's samples right after its final state, which the API may show
  // first; the deliveries come later still, and the queue job completes after the worker has
  // released its lease (the running gauge reads the queue, not the build rows).
  let text = await scrape();
  for (let i = 0; i < 100; i++) {
    const done = [
      'kiln_builds_running 0',
      'kiln_event_deliveries_total{status="delivered"} 3',
      'kiln_export_bytes_per_second_count{outcome="succeeded",project="alpha"} 2',
      'kiln_export_bytes_per_second_count{outcome="succeeded",project="other"} 1',
    ].every((line) => lineOf(text, line.slice(0, line.lastIndexOf(' '))) === line);
    if (done) break;
    await new Promise((r) => setTimeout(r, 100));
    text = await scrape();
  }
  assert.equal(received, 3);

  const alpha = 'outcome="succeeded",project="alpha"';
  const other = 'outcome="succeeded",project="other"';
  for (const name of [
    'kiln_build_queue_wait_seconds',
    'kiln_build_duration_seconds',
    'kiln_export_bytes_per_second',
  ]) {
    assert.equal(sample(text, `${name}_count{${alpha}}`), 2, name);
    assert.equal(sample(text, `${name}_bucket{${alpha},le="+Inf"}`), 2, name);
    assert.equal(sample(text, `${name}_count{${other}}`), 1, name);
    assert.ok(sample(text, `${name}_sum{${alpha}}`) > 0, name);
  }
  // Buckets are cumulative: a build of a few seconds is under 60 s, none is under 0 s.
  assert.equal(sample(text, `kiln_build_duration_seconds_bucket{${alpha},le="60"}`), 2);
  assert.ok(sample(text, `kiln_build_duration_seconds_sum{${alpha}}`) < 120);
  assert.equal(sample(text, 'kiln_result_cache_lookups_total{result="hit"}'), 1);
  assert.equal(sample(text, 'kiln_result_cache_lookups_total{result="miss"}'), 3);
  // The second build found the COPY of busybox (and the base) in BuildKit's cache.
  assert.ok(sample(text, 'kiln_buildkit_vertices_total{cached="true"}') >= 1);
  assert.ok(sample(text, 'kiln_buildkit_vertices_total{cached="false"}') >= 3);
  assert.equal(sample(text, 'kiln_event_deliveries_total{status="delivered"}'), 3);
  assert.equal(sample(text, 'kiln_event_deliveries_total{status="failed"}'), 0);
  assert.equal(sample(text, 'kiln_builds_waiting'), 0);
  assert.equal(sample(text, 'kiln_builds_running'), 0);
  assert.ok(
    sample(
      text,
      'kiln_http_request_duration_seconds_count{method="POST",route="/v1/builds",status_code="202"}',
    ) >= 3,
  );
  assert.ok(
    sample(
      text,
      'kiln_http_request_duration_seconds_count{method="GET",route="/v1/builds/:id",status_code="200"}',
    ) > 0,
  );
});

test('every query of the example alert rules and Grafana dashboard names metrics and labels that /metrics has', async () => {
  const scraped = parseScrape(await scrape());
  const dir = new URL('../../deploy/observability/', import.meta.url);
  const rules = parse(await fs.readFile(new URL('alerts.yml', dir), 'utf8')) as {
    groups: Array<{ rules: Array<{ alert: string; expr: string }> }>;
  };
  const dashboard = JSON.parse(await fs.readFile(new URL('grafana-dashboard.json', dir), 'utf8')) as {
    panels: Array<{ title: string; targets: Array<{ expr: string }> }>;
  };
  const queries = [
    ...rules.groups.flatMap((g) => g.rules.map((r) => [`alert ${r.alert}`, r.expr] as const)),
    ...dashboard.panels.flatMap((p) => p.targets.map((t) => [`panel ${p.title}`, t.expr] as const)),
  ];
  assert.ok(queries.length >= 20, `${queries.length} queries`);
  const problems = queries.flatMap(([where, expr]) =>
    missingFrom(scraped, expr).map((p) => `${where}: ${p}`),
  );
  assert.deepEqual(problems, []);
});
