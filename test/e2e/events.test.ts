// Completion events end to end: real builds on a private dockerd, the API and a worker in this
// process, and real HTTP receivers on loopback (node:http) that fail on purpose. Checks the
// signature with the helper receivers use, the delivery log through the API, exactly one event
// per final state (worker-side: succeeded, failed, canceled while running; API-side: canceled
// while queued, result-cache hit), retries with backoff until the receiver answers 2xx, giving
// up after KILN_EVENT_ATTEMPTS, the sweep, project isolation and hostile endpoint input.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import fs from 'node:fs/promises';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { after, before, describe, test } from 'node:test';
import { recordBuildEvents, verifyKilnSignature } from '@kiln/core';
import { busyboxPath, makeContext } from '../../packages/buildkit-client/test-support/context.js';
import { startTestKiln, type TestKiln } from '../support/kiln.js';

if (!process.env.KILN_TEST_DOCKER_SOCK)
  throw new Error('KILN_TEST_DOCKER_SOCK is not set: run through `npm test`');

const EVENT_ATTEMPTS = 4;
const RUN = (script: string) => `RUN ["/bin/busybox", "sh", "-c", ${JSON.stringify(script)}]`;

interface Received {
  path: string;
  headers: http.IncomingHttpHeaders;
  body: string;
  answered: number;
}

interface EventJson {
  id: string;
  type: string;
  createdAt: string;
  data: {
    id: string;
    projectId: string;
    status: string;
    cached: boolean;
    artifact: { filename: string; size: number; digest: string } | null;
    error: { code: string; message: string } | null;
    finishedAt: string | null;
  };
}

interface DeliveryJson {
  id: string;
  endpointId: string;
  buildId: string;
  event: string;
  status: string;
  attempts: number;
  deliveredAt: string | null;
  attemptLog: Array<{ number: number; statusCode: number | null; error: string | null; durationMs: number }>;
}

interface BuildJson {
  id: string;
  status: string;
  error?: { code: string };
  artifact?: { size: number; digest: string };
}

/**
 * A receiver: `/flaky-<n>/...` answers 500 n times then 200 (counted per path), `/dead` 503,
 * `/redirect` 302 to `/ok`, `/hang...` never (until `cutHung`), anything else 200. Every
 * request is kept with its raw body.
 */
async function startReceiver() {
  const received: Received[] = [];
  const counts = new Map<string, number>();
  const hung = new Set<http.ServerResponse>();
  const server = http.createServer((req, res) => {
    if (req.url?.startsWith('/hang')) {
      received.push({ path: req.url, headers: req.headers, body: '', answered: 0 });
      hung.add(res);
      res.on('close', () => hung.delete(res));
      return;
    }
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const path = req.url ?? '/';
      const seen = (counts.get(path) ?? 0) + 1;
      counts.set(path, seen);
      const flaky = /^\/flaky-(\d+)\b/.exec(path);
      let status = 200;
      if (flaky && seen <= Number(flaky[1])) status = 500;
      else if (path.startsWith('/dead')) status = 503;
      else if (path.startsWith('/redirect')) status = 302;
      received.push({
        path,
        headers: req.headers,
        body: Buffer.concat(chunks).toString('utf8'),
        answered: status,
      });
      if (status === 302) res.setHeader('location', '/ok-after-redirect');
      res.writeHead(status, { 'content-type': 'text/plain' }).end(status === 200 ? 'ok' : `nope ${status}`);
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  return {
    base,
    received,
    at: (path: string) => received.filter((r) => r.path === path),
    /** Drops the connections of the requests left unanswered. */
    cutHung: () => {
      for (const res of hung) res.socket?.destroy();
    },
    close: () =>
      new Promise<void>((resolve) => {
        for (const res of hung) res.socket?.destroy();
        server.close(() => resolve());
      }),
  };
}

type Files = Record<string, string | Buffer | { content: Buffer; mode: number }>;

/** A gzipped tar of a context; the same bytes submitted twice hit the result cache. */
async function tarOf(files: Files): Promise<Buffer> {
  const ctx = await makeContext(files);
  try {
    return execFileSync('tar', ['-C', ctx.dir, '-czf', '-', '.']);
  } finally {
    await ctx.cleanup();
  }
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function until<T>(what: string, probe: () => Promise<T | undefined>, timeoutMs = 120_000): Promise<T> {
  const end = Date.now() + timeoutMs;
  for (;;) {
    const value = await probe();
    if (value !== undefined) return value;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await sleep(200);
  }
}

describe('completion events', () => {
  let kiln: TestKiln;
  let receiver: Awaited<ReturnType<typeof startReceiver>>;
  let busybox: Buffer;

  /** A client for one project (one token). */
  const client = (token: string) => {
    const api = (p: string, init: RequestInit = {}) => {
      const headers = new Headers(init.headers);
      headers.set('authorization', `Bearer ${token}`);
      return fetch(`${kiln.url}${p}`, { ...init, headers, redirect: 'manual' });
    };
    const json = async <T>(p: string, init: RequestInit = {}, status = 200): Promise<T> => {
      const res = await api(p, init);
      const text = await res.text();
      assert.equal(res.status, status, `${init.method ?? 'GET'} ${p}: ${text}`);
      return JSON.parse(text) as T;
    };
    const post = (p: string, body: unknown) =>
      api(p, { method: 'POST', body: JSON.stringify(body), headers: { 'content-type': 'application/json' } });
    return {
      api,
      json,
      post,
      async endpoint(url: string): Promise<{ id: string; secret: string; url: string }> {
        const res = await post('/v1/endpoints', { url });
        const text = await res.text();
        assert.equal(res.status, 201, text);
        return JSON.parse(text);
      },
      async submit(context: Files | Buffer, query: string): Promise<BuildJson> {
        const res = await api(`/v1/builds?${query}`, {
          method: 'POST',
          body: Buffer.isBuffer(context) ? context : await tarOf(context),
          headers: { 'content-type': 'application/gzip' },
        });
        const text = await res.text();
        assert.ok(res.status === 202 || res.status === 201, text);
        return JSON.parse(text) as BuildJson;
      },
      waitFor(id: string, statuses: string[]): Promise<BuildJson> {
        return until(`build ${id} in ${statuses}`, async () => {
          const b = await json<BuildJson>(`/v1/builds/${id}`);
          return statuses.includes(b.status) ? b : undefined;
        });
      },
      deliveries(
        endpointId: string,
        query = '',
      ): Promise<{ items: DeliveryJson[]; nextCursor: string | null }> {
        return json(`/v1/endpoints/${endpointId}/deliveries${query}`);
      },
    };
  };

  /** Waits for the endpoint's delivery of `buildId` to be `status`. */
  const settled = (c: ReturnType<typeof client>, endpointId: string, buildId: string, status: string) =>
    until(`delivery of ${buildId} to ${endpointId} ${status}`, async () => {
      const { items } = await c.deliveries(endpointId, '?limit=100');
      const d = items.find((i) => i.buildId === buildId);
      return d?.status === status ? d : undefined;
    });

  /** The events a receiver path got, checked against the secret; parsed. */
  const verifiedEvents = (path: string, secret: string): EventJson[] =>
    receiver.at(path).map((r) => {
      const check = verifyKilnSignature(r.headers['kiln-signature'] as string, r.body, secret, 300);
      assert.equal(check.ok, true, `signature of a request to ${path}: ${JSON.stringify(check)}`);
      assert.equal(r.headers['content-type'], 'application/json');
      const event = JSON.parse(r.body) as EventJson;
      assert.equal(r.headers['kiln-event-id'], event.id);
      return event;
    });

  before(async () => {
    busybox = await fs.readFile(busyboxPath());
    receiver = await startReceiver();
    kiln = await startTestKiln({
      worker: true,
      project: 'events',
      env: {
        KILN_EVENT_ATTEMPTS: String(EVENT_ATTEMPTS),
        KILN_EVENT_BACKOFF_MS: '200',
        KILN_EVENT_TIMEOUT_SECONDS: '10',
      },
      // The sweep is driven by the test (sweep()); deliveries older than 1 s are its business.
      workerDeps: { reconcileIntervalMs: 0, queuedGraceMs: 1000 },
    });
  });
  after(async () => {
    await kiln?.stop();
    await receiver?.close();
  });

  test('a succeeded build: the receiver fails twice, then gets the signed event; the log shows 500, 500, 200', async () => {
    const c = client(kiln.token);
    const endpoint = await c.endpoint(`${receiver.base}/flaky-2/a`);
    assert.match(endpoint.secret, /^whsec_[A-Za-z0-9_-]{43}$/);
    const queued = await c.submit(
      { Dockerfile: 'FROM scratch\nCOPY a /a\n', a: 'hello' },
      'output=type=tar,dest=a.tar',
    );
    const done = await c.waitFor(queued.id, ['succeeded', 'failed']);
    assert.equal(done.status, 'succeeded', JSON.stringify(done.error));

    const delivery = await settled(c, endpoint.id, done.id, 'delivered');
    assert.equal(delivery.event, 'build.succeeded');
    assert.equal(delivery.attempts, 3);
    assert.deepEqual(
      delivery.attemptLog.map((a) => [a.number, a.statusCode]),
      [
        [1, 500],
        [2, 500],
        [3, 200],
      ],
    );
    // Only the status and its standard reason: a receiver's body is not kept.
    assert.equal(delivery.attemptLog[0]?.error, 'HTTP 500 Internal Server Error');
    assert.equal(delivery.attemptLog[2]?.error, null);
    assert.ok(delivery.deliveredAt);

    // Three POSTs of the very same event (same bytes, same id), each freshly and validly signed.
    const requests = receiver.at('/flaky-2/a');
    assert.equal(requests.length, 3);
    assert.equal(new Set(requests.map((r) => r.body)).size, 1);
    const [event] = verifiedEvents('/flaky-2/a', endpoint.secret);
    assert.ok(event);
    assert.equal(event.id, delivery.id);
    assert.equal(event.type, 'build.succeeded');
    assert.equal(event.data.id, done.id);
    assert.equal(event.data.status, 'succeeded');
    assert.equal(event.data.cached, false);
    assert.deepEqual(event.data.artifact, {
      filename: 'a.tar',
      size: done.artifact?.size,
      digest: done.artifact?.digest,
    });
    assert.equal(event.data.error, null);
    assert.ok(event.data.finishedAt);
    // Another secret or a changed byte does not verify.
    const raw = requests[0] as Received;
    const header = raw.headers['kiln-signature'] as string;
    assert.equal(verifyKilnSignature(header, raw.body, 'whsec_wrong', 300).ok, false);
    assert.equal(
      verifyKilnSignature(header, raw.body.replace('succeeded', 'failed'), endpoint.secret, 300).ok,
      false,
    );

    // The build's own view of its events.
    const perBuild = await c.json<{ items: DeliveryJson[] }>(`/v1/builds/${done.id}/events`);
    assert.deepEqual(
      perBuild.items.map((d) => [d.id, d.status]),
      [[delivery.id, 'delivered']],
    );
  });

  test('exactly one event per final state: failed, canceled while running (worker), canceled while queued and a result-cache hit (API)', async () => {
    const c = client(await kiln.newToken('outcomes'));
    const ok = await c.endpoint(`${receiver.base}/ok/outcomes`);
    const second = await c.endpoint(`${receiver.base}/ok/outcomes-2`);

    const failed = await c.submit(
      { Dockerfile: 'FROM scratch\nNOT_AN_INSTRUCTION x\n' },
      'output=type=tar,dest=f.tar',
    );
    const sleeper = await c.submit(
      {
        busybox: { content: busybox, mode: 0o755 },
        Dockerfile: `FROM scratch\nCOPY busybox /bin/busybox\n${RUN('sleep 300')}\n`,
      },
      'output=type=tar,dest=s.tar&network=none&noCache=true',
    );
    await c.waitFor(sleeper.id, ['running']);
    assert.equal((await c.api(`/v1/builds/${sleeper.id}/cancel`, { method: 'POST' })).status, 202);

    // Queued, never taken: the API cancels it itself.
    await kiln.deps.queue.pause();
    let queuedCancel: BuildJson;
    try {
      queuedCancel = await c.submit(
        { Dockerfile: 'FROM scratch\nCOPY q /q\n', q: 'q' },
        'output=type=tar,dest=q.tar',
      );
      assert.equal(queuedCancel.status, 'queued');
      assert.equal((await c.api(`/v1/builds/${queuedCancel.id}/cancel`, { method: 'POST' })).status, 202);
    } finally {
      await kiln.deps.queue.resume();
    }

    // A result-cache hit is born succeeded, in the API.
    const files = await tarOf({ Dockerfile: 'FROM scratch\nCOPY c /c\n', c: 'cache me' });
    const original = await c.submit(files, 'output=type=tar,dest=c.tar');
    assert.equal((await c.waitFor(original.id, ['succeeded', 'failed'])).status, 'succeeded');
    const cached = await c.submit(files, 'output=type=tar,dest=c.tar');
    assert.equal(cached.status, 'succeeded', 'answered from the result cache');

    assert.equal((await c.waitFor(failed.id, ['failed'])).error?.code, 'build_failed');
    await c.waitFor(sleeper.id, ['canceled']);
    const expected: Record<string, string> = {
      [failed.id]: 'build.failed',
      [sleeper.id]: 'build.canceled',
      [queuedCancel.id]: 'build.canceled',
      [original.id]: 'build.succeeded',
      [cached.id]: 'build.succeeded',
    };
    for (const endpoint of [ok, second]) {
      for (const id of Object.keys(expected)) await settled(c, endpoint.id, id, 'delivered');
    }
    await sleep(2000); // time for a duplicate to show up, were there one
    for (const [endpoint, path] of [
      [ok, '/ok/outcomes'],
      [second, '/ok/outcomes-2'],
    ] as const) {
      const events = verifiedEvents(path, endpoint.secret);
      const byBuild = new Map<string, string[]>();
      for (const e of events) byBuild.set(e.data.id, [...(byBuild.get(e.data.id) ?? []), e.type]);
      assert.deepEqual(
        Object.fromEntries([...byBuild].map(([id, types]) => [id, types])),
        Object.fromEntries(Object.entries(expected).map(([id, type]) => [id, [type]])),
        `${path}: one event per build`,
      );
      const byId = new Map(events.map((e) => [e.data.id, e]));
      assert.equal(byId.get(failed.id)?.data.error?.code, 'build_failed');
      assert.equal(byId.get(failed.id)?.data.artifact, null);
      assert.equal(byId.get(queuedCancel.id)?.data.error?.code, 'canceled');
      assert.equal(byId.get(cached.id)?.data.cached, true);
      assert.equal(byId.get(cached.id)?.data.artifact?.digest, byId.get(original.id)?.data.artifact?.digest);
    }
    const rows = await kiln.deps.db.eventDelivery.count({
      where: { buildId: { in: Object.keys(expected) } },
    });
    assert.equal(rows, 2 * Object.keys(expected).length);
  });

  test('receivers that never succeed: failed after KILN_EVENT_ATTEMPTS attempts; redirects are not followed; no answer is logged as such', async () => {
    const c = client(await kiln.newToken('unlucky'));
    const dead = await c.endpoint(`${receiver.base}/dead`);
    const redirect = await c.endpoint(`${receiver.base}/redirect`);
    // A port nothing listens on (bound, then closed).
    const closed = http.createServer();
    await new Promise<void>((resolve) => closed.listen(0, '127.0.0.1', resolve));
    const closedPort = (closed.address() as AddressInfo).port;
    await new Promise<void>((resolve) => closed.close(() => resolve()));
    const refused = await c.endpoint(`http://127.0.0.1:${closedPort}/hook`);

    await kiln.deps.queue.pause();
    let build: BuildJson;
    try {
      build = await c.submit(
        { Dockerfile: 'FROM scratch\nCOPY u /u\n', u: 'u' },
        'output=type=tar,dest=u.tar',
      );
      assert.equal((await c.api(`/v1/builds/${build.id}/cancel`, { method: 'POST' })).status, 202);
    } finally {
      await kiln.deps.queue.resume();
    }

    const deadLog = await settled(c, dead.id, build.id, 'failed');
    assert.equal(deadLog.attempts, EVENT_ATTEMPTS);
    assert.deepEqual(
      deadLog.attemptLog.map((a) => a.statusCode),
      Array(EVENT_ATTEMPTS).fill(503),
    );
    assert.equal(deadLog.deliveredAt, null);
    assert.equal(receiver.at('/dead').length, EVENT_ATTEMPTS);

    const redirectLog = await settled(c, redirect.id, build.id, 'failed');
    assert.deepEqual(
      redirectLog.attemptLog.map((a) => a.statusCode),
      Array(EVENT_ATTEMPTS).fill(302),
    );
    assert.match(redirectLog.attemptLog[0]?.error ?? '', /redirects are not followed/);
    assert.equal(receiver.at('/ok-after-redirect').length, 0);

    const refusedLog = await settled(c, refused.id, build.id, 'failed');
    assert.equal(refusedLog.attempts, EVENT_ATTEMPTS);
    for (const a of refusedLog.attemptLog) {
      assert.equal(a.statusCode, null);
      assert.match(a.error ?? '', /ECONNREFUSED/);
    }
    // Nothing more comes once failed.
    await sleep(2000);
    assert.equal(receiver.at('/dead').length, EVENT_ATTEMPTS);
  });

  test('the sweep enqueues a pending delivery whose job is missing; recording a final state twice adds nothing', async () => {
    const c = client(await kiln.newToken('sweep'));
    await kiln.deps.queue.pause();
    let build: BuildJson;
    try {
      build = await c.submit(
        { Dockerfile: 'FROM scratch\nCOPY w /w\n', w: 'w' },
        'output=type=tar,dest=w.tar',
      );
      assert.equal((await c.api(`/v1/builds/${build.id}/cancel`, { method: 'POST' })).status, 202);
    } finally {
      await kiln.deps.queue.resume();
    }
    // Registered after the build ended: as if its writer had committed the delivery and then
    // died before enqueueing it.
    const endpoint = await c.endpoint(`${receiver.base}/ok/sweep`);
    const row = await kiln.deps.builds.byId(build.id);
    assert.ok(row);
    const inserted = await kiln.deps.db.$transaction((tx) => recordBuildEvents(tx, row));
    assert.equal(inserted.length, 1);
    assert.deepEqual(await kiln.deps.db.$transaction((tx) => recordBuildEvents(tx, row)), []);

    await sleep(1500); // past the sweep's grace
    assert.equal(receiver.at('/ok/sweep').length, 0, 'nothing enqueued it');
    const worker = kiln.worker;
    assert.ok(worker);
    assert.deepEqual(await worker.events.sweep(), inserted);
    const delivery = await settled(c, endpoint.id, build.id, 'delivered');
    assert.equal(delivery.id, inserted[0]);
    assert.equal(verifiedEvents('/ok/sweep', endpoint.secret).length, 1);
    // A delivered one is not the sweep's business.
    assert.deepEqual(await worker.events.sweep(), []);
  });

  test('endpoints are per project (404 across), secrets are shown once, DELETE disables; the delivery log pages', async () => {
    const a = client(kiln.token);
    const b = client(await kiln.newToken('other'));
    const mine = await a.endpoint(`${receiver.base}/ok/isolation`);
    const listed = await a.json<{ items: Array<Record<string, unknown>> }>('/v1/endpoints');
    const row = listed.items.find((e) => e.id === mine.id);
    assert.ok(row);
    assert.equal(row.secret, undefined, 'the secret is never listed');
    assert.equal(row.disabledAt, null);
    assert.equal((await a.json<Record<string, unknown>>(`/v1/endpoints/${mine.id}`)).secret, undefined);

    const builds = await a.json<{ items: BuildJson[] }>('/v1/builds?limit=1');
    const someBuild = builds.items[0]?.id;
    assert.ok(someBuild);
    for (const [method, p] of [
      ['GET', `/v1/endpoints/${mine.id}`],
      ['GET', `/v1/endpoints/${mine.id}/deliveries`],
      ['DELETE', `/v1/endpoints/${mine.id}`],
      ['GET', `/v1/builds/${someBuild}/events`],
      ['GET', '/v1/endpoints/01NOSUCHENDPOINT0000000000'],
    ] as const) {
      const res = await b.api(p, { method });
      assert.equal(res.status, 404, `${method} ${p} from another project`);
      assert.equal(((await res.json()) as { error: { code: string } }).error.code, 'not_found');
    }
    assert.equal((await b.json<{ items: unknown[] }>('/v1/endpoints')).items.length, 0);

    // Paging the first test's endpoint log with limit=1 (it has one delivery): no next page.
    const first = (await a.json<{ items: Array<{ id: string; url: string }> }>('/v1/endpoints')).items.find(
      (e) => e.url.endsWith('/flaky-2/a'),
    );
    assert.ok(first);
    const page = await a.deliveries(first.id, '?limit=1');
    assert.equal(page.items.length, 1);
    assert.equal(page.nextCursor, null);
    assert.equal((await a.api(`/v1/endpoints/${first.id}/deliveries?limit=0`)).status, 400);

    // Disabled: 204 (again 204), shown with disabledAt; later final states do not go to it.
    assert.equal((await a.api(`/v1/endpoints/${mine.id}`, { method: 'DELETE' })).status, 204);
    assert.equal((await a.api(`/v1/endpoints/${mine.id}`, { method: 'DELETE' })).status, 204);
    assert.ok((await a.json<{ disabledAt: string | null }>(`/v1/endpoints/${mine.id}`)).disabledAt);
    await kiln.deps.queue.pause();
    let build: BuildJson;
    try {
      build = await a.submit(
        { Dockerfile: 'FROM scratch\nCOPY d /d\n', d: 'd' },
        'output=type=tar,dest=d.tar',
      );
      assert.equal((await a.api(`/v1/builds/${build.id}/cancel`, { method: 'POST' })).status, 202);
    } finally {
      await kiln.deps.queue.resume();
    }
    const events = await a.json<{ items: DeliveryJson[] }>(`/v1/builds/${build.id}/events`);
    assert.ok(!events.items.some((d) => d.endpointId === mine.id));
    assert.ok(
      events.items.some((d) => d.endpointId === first.id),
      'the active endpoint still gets it',
    );
  });

  test('hostile endpoint input: 4xx with stable codes, nothing stored', async () => {
    const c = client(await kiln.newToken('hostile'));
    const bad: Array<[unknown, string]> = [
      ['ftp://example.com/hook', 'invalid_endpoint'],
      ['file:///etc/passwd', 'invalid_endpoint'],
      ['javascript:alert(1)', 'invalid_endpoint'],
      ['not a url', 'invalid_endpoint'],
      ['/relative/path', 'invalid_endpoint'],
      ['http://user:pw@example.com/hook', 'invalid_endpoint'],
      ['http://example.com/hook#frag', 'invalid_endpoint'],
      ['http://exa\nmple.com/', 'invalid_endpoint'],
      [' http://example.com/', 'invalid_endpoint'],
      ['http://exa mple.com/', 'invalid_endpoint'],
      // Refused with every JSON body holding a NUL, before the route looks at it.
      ['http://\u0000example.com/', 'invalid_request'],
      ['http://', 'invalid_endpoint'],
      ['http://[::1/', 'invalid_endpoint'],
      ['', 'invalid_endpoint'],
      [`https://example.com/${'a'.repeat(3000)}`, 'invalid_endpoint'],
      [12345, 'invalid_endpoint'],
      [null, 'invalid_endpoint'],
      [{ href: 'http://example.com' }, 'invalid_endpoint'],
      [['http://example.com'], 'invalid_endpoint'],
    ];
    for (const [url, code] of bad) {
      const res = await c.post('/v1/endpoints', { url });
      const text = await res.text();
      assert.equal(res.status, 400, `${JSON.stringify(url)}: ${text}`);
      assert.equal((JSON.parse(text) as { error: { code: string } }).error.code, code, JSON.stringify(url));
    }
    for (const [body, type, status] of [
      ['{}', 'application/json', 400],
      ['{"url":"http://example.com","secret":"mine"}', 'application/json', 400],
      ['{"url":', 'application/json', 400],
      ['url=http://example.com', 'application/x-www-form-urlencoded', 415],
      ['"http://example.com"', 'application/json', 400],
      ['{"__proto__":{"url":"http://example.com"}}', 'application/json', 400],
    ] as const) {
      const res = await c.api('/v1/endpoints', { method: 'POST', body, headers: { 'content-type': type } });
      assert.equal(res.status, status, `${body}: ${await res.clone().text()}`);
      assert.ok(((await res.json()) as { error?: { code: string } }).error?.code, body);
    }
    for (const p of [
      '/v1/endpoints/..%2F..',
      '/v1/endpoints/a%00b/deliveries',
      `/v1/endpoints/${'x'.repeat(100)}`,
    ]) {
      const res = await c.api(p);
      assert.ok(res.status === 400 || res.status === 404, `${p}: ${res.status}`);
    }
    assert.equal((await c.api('/v1/endpoints/x/deliveries?cursor=../../')).status, 400);
    assert.equal((await c.api('/v1/endpoints/x/deliveries?status=lost')).status, 400);
    const anonymous = await fetch(`${kiln.url}/v1/endpoints`, {
      headers: { authorization: 'Bearer nope-nope-nope' },
    });
    assert.equal(anonymous.status, 401);
    assert.equal((await c.json<{ items: unknown[] }>('/v1/endpoints')).items.length, 0, 'nothing stored');

    // A project may not pile up endpoints without bound.
    const made: string[] = [];
    for (;;) {
      const res = await c.post('/v1/endpoints', { url: `${receiver.base}/ok/limit-${made.length}` });
      if (res.status === 409) {
        assert.equal(((await res.json()) as { error: { code: string } }).error.code, 'conflict');
        break;
      }
      assert.equal(res.status, 201);
      made.push(((await res.json()) as { id: string }).id);
      assert.ok(made.length <= 100, 'a limit applies');
    }
    await c.api(`/v1/endpoints/${made[0]}`, { method: 'DELETE' });
    assert.equal((await c.post('/v1/endpoints', { url: `${receiver.base}/ok/limit-again` })).status, 201);
    // Creations at once cannot both take the last place: free one, then race forty for it.
    await c.api(`/v1/endpoints/${made[1]}`, { method: 'DELETE' });
    const raced = await Promise.all(
      Array.from({ length: 40 }, (_, i) => c.post('/v1/endpoints', { url: `${receiver.base}/ok/race-${i}` })),
    );
    assert.deepEqual(raced.map((r) => r.status).sort(), [201, ...Array<number>(39).fill(409)]);
    const listed = await c.json<{ items: Array<{ disabledAt: string | null }> }>('/v1/endpoints?limit=100');
    assert.equal(listed.items.filter((e) => e.disabledAt === null).length, made.length);
  });
  test("one project's receivers that never answer hold a few of the delivery places, not all: another project's event goes out meanwhile", async () => {
    const noisy = client(await kiln.newToken('noisy'));
    const quiet = client(await kiln.newToken('quiet'));
    // More endpoints than the worker's 16 places, each a receiver that never answers (10 s).
    const hanging: string[] = [];
    for (let i = 0; i < 20; i++) hanging.push((await noisy.endpoint(`${receiver.base}/hang/${i}`)).id);
    const calm = await quiet.endpoint(`${receiver.base}/ok/quiet`);
    const canceledBuild = async (c: ReturnType<typeof client>, name: string) => {
      await kiln.deps.queue.pause();
      try {
        const b = await c.submit(
          { Dockerfile: `FROM scratch\nCOPY ${name} /${name}\n`, [name]: name },
          `output=type=tar,dest=${name}.tar`,
        );
        assert.equal((await c.api(`/v1/builds/${b.id}/cancel`, { method: 'POST' })).status, 202);
        return b;
      } finally {
        await kiln.deps.queue.resume();
      }
    };
    const hangs = () => receiver.received.filter((r) => r.path.startsWith('/hang/')).length;
    try {
      // The noisy project's 20 deliveries are queued first, the quiet one's after them.
      await canceledBuild(noisy, 'n');
      await until('the noisy deliveries to start', async () => (hangs() > 0 ? true : undefined));
      const build = await canceledBuild(quiet, 'q');
      await settled(quiet, calm.id, build.id, 'delivered');
      // First come, first served, every place would hold a hanging POST before the quiet one.
      assert.ok(hangs() < 16, `${hangs()} POSTs to the hanging receivers before the quiet one's`);
    } finally {
      for (const id of hanging) await noisy.api(`/v1/endpoints/${id}`, { method: 'DELETE' });
      receiver.cutHung();
    }
  });
});
