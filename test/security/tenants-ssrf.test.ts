// A hostile tenant points Kiln at internal addresses (SSRF), against the real API and worker.
// With the operator's allowance off: completion-event endpoints on literal loopback, private,
// link-local and metadata addresses and localhost names are refused at registration (400
// invalid_endpoint); endpoints whose name resolves to loopback (or stored before the allowance
// was withdrawn) are refused at delivery, recorded as one failed attempt with nothing sent; git
// contexts on denied hosts or private literals are refused (400 invalid_context). With the
// allowance on, a loopback receiver gets its event. Only loopback is ever dialled: every other
// address here is refused before any connection.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { after, before, describe, test } from 'node:test';
import { makeContext } from '../../packages/buildkit-client/test-support/context.js';
import { startTestKiln, type TestKiln } from '../support/kiln.js';

if (!process.env.KILN_TEST_DOCKER_SOCK)
  throw new Error('KILN_TEST_DOCKER_SOCK is not set: run through `npm test`');

interface DeliveryJson {
  buildId: string;
  status: string;
  attempts: number;
  attemptLog: Array<{ number: number; statusCode: number | null; error: string | null }>;
}

/** A receiver on loopback that counts what reaches it. */
async function startReceiver() {
  const paths: string[] = [];
  const server = http.createServer((req, res) => {
    req.resume();
    req.on('end', () => {
      paths.push(req.url ?? '/');
      res.writeHead(200).end('ok');
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as AddressInfo).port;
  return { port, paths, close: () => new Promise<void>((resolve) => server.close(() => resolve())) };
}

async function until<T>(what: string, probe: () => Promise<T | undefined>, timeoutMs = 60_000): Promise<T> {
  const end = Date.now() + timeoutMs;
  for (;;) {
    const value = await probe();
    if (value !== undefined) return value;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 200));
  }
}

function client(kiln: TestKiln) {
  const api = (p: string, init: RequestInit = {}) => {
    const headers = new Headers(init.headers);
    headers.set('authorization', `Bearer ${kiln.token}`);
    return fetch(`${kiln.url}${p}`, { ...init, headers });
  };
  const post = (p: string, body: unknown) =>
    api(p, { method: 'POST', body: JSON.stringify(body), headers: { 'content-type': 'application/json' } });
  return {
    api,
    post,
    /** A tiny build run to its end on the real worker: every active endpoint gets its event. */
    async finishedBuild(): Promise<string> {
      const ctx = await makeContext({
        Dockerfile: 'FROM scratch\nCOPY a /a\n',
        a: randomBytes(8).toString('hex'),
      });
      const tgz = execFileSync('tar', ['-C', ctx.dir, '-czf', '-', '.']);
      await ctx.cleanup();
      const res = await api('/v1/builds?output=type=tar,dest=a.tar', {
        method: 'POST',
        body: tgz,
        headers: { 'content-type': 'application/gzip' },
      });
      const { id } = (await res.json()) as { id: string };
      await until(`build ${id} final`, async () => {
        const b = (await (await api(`/v1/builds/${id}`)).json()) as { status: string };
        return ['succeeded', 'failed'].includes(b.status) ? b : undefined;
      });
      return id;
    },
    async deliveryOf(endpointId: string, buildId: string, status: string): Promise<DeliveryJson> {
      return until(`delivery to ${endpointId} ${status}`, async () => {
        const res = await api(`/v1/endpoints/${endpointId}/deliveries`);
        const { items } = (await res.json()) as { items: DeliveryJson[] };
        const d = items.find((i) => i.buildId === buildId);
        return d?.status === status ? d : undefined;
      });
    },
  };
}

describe('SSRF with the allowance off (the default)', () => {
  let kiln: TestKiln;
  let receiver: Awaited<ReturnType<typeof startReceiver>>;
  before(async () => {
    receiver = await startReceiver();
    kiln = await startTestKiln({
      worker: true,
      project: 'ssrf',
      env: {
        KILN_EVENT_ALLOWED_NETWORKS: '',
        KILN_GIT_ALLOWED_NETWORKS: '',
        KILN_GIT_DENIED_HOSTS: 'evil.example.com,*.internal.example',
        KILN_EVENT_BACKOFF_MS: '200',
      },
      workerDeps: { reconcileIntervalMs: 0 },
    });
  });
  after(async () => {
    await kiln?.stop();
    await receiver?.close();
  });

  test('literal internal hosts and localhost names: 400 invalid_endpoint naming why, nothing stored', async () => {
    const c = client(kiln);
    const port = receiver.port;
    for (const [url, why] of [
      [`http://127.0.0.1:${port}/hook`, /127\.0\.0\.1, a loopback address/],
      [`http://[::1]:${port}/hook`, /\[::1\], a loopback address/],
      ['http://10.0.0.1/hook', /private/],
      ['http://172.16.0.1/hook', /private/],
      ['http://192.168.1.1/hook', /private/],
      ['http://100.64.0.1/hook', /CGNAT/],
      ['http://169.254.169.254/latest/meta-data/', /cloud metadata/],
      ['http://[fe80::1]/hook', /link-local/],
      ['http://[fd00::1]/hook', /unique local/],
      ['http://0.0.0.0/hook', /unspecified/],
      ['http://224.0.0.1/hook', /multicast/],
      ['http://255.255.255.255/hook', /broadcast/],
      ['http://2130706433/hook', /127\.0\.0\.1, a loopback/],
      ['http://0x7f.1/hook', /127\.0\.0\.1, a loopback/],
      ['http://[::ffff:127.0.0.1]/hook', /loopback address \(IPv4-mapped\)/],
      ['http://[::ffff:a9fe:a9fe]/hook', /cloud metadata/],
      [`http://localhost:${port}/hook`, /localhost, a loopback name/],
      ['https://admin.localhost/hook', /a loopback name/],
      ['http://LOCALHOST./hook', /a loopback name/],
    ] as const) {
      const res = await c.post('/v1/endpoints', { url });
      const body = (await res.json()) as { error: { code: string; message: string } };
      assert.equal(res.status, 400, `${url}: ${JSON.stringify(body)}`);
      assert.equal(body.error.code, 'invalid_endpoint', url);
      assert.match(body.error.message, why, url);
    }
    const list = (await (await c.api('/v1/endpoints')).json()) as { items: unknown[] };
    assert.deepEqual(list.items, []);
    assert.deepEqual(receiver.paths, []);
  });

  test('refused at delivery: a name resolving to loopback, a literal stored before the allowance went; nothing sent, failed at once', async () => {
    const c = client(kiln);
    const project = await kiln.deps.db.project.findUniqueOrThrow({ where: { name: 'ssrf' } });
    // As registered while the operator allowed loopback: the registration check cannot see these now.
    const stored = async (url: string) =>
      kiln.deps.db.eventEndpoint.create({ data: { projectId: project.id, url, secret: 'whsec_test' } });
    const byName = await stored(`http://localhost:${receiver.port}/by-name`);
    const literal = await stored(`http://127.0.0.1:${receiver.port}/literal`);
    const buildId = await c.finishedBuild();
    for (const [endpoint, why] of [
      [
        byName,
        /localhost resolves to (127\.0\.0\.1|::1), which is a loopback address: refused, no request was made/,
      ],
      [literal, /127\.0\.0\.1 is a loopback address: refused, no request was made/],
    ] as const) {
      const d = await c.deliveryOf(endpoint.id, buildId, 'failed');
      assert.equal(d.attempts, 1, 'not retried: another try would be refused too');
      assert.equal(d.attemptLog.length, 1);
      assert.equal(d.attemptLog[0]?.statusCode, null);
      assert.match(d.attemptLog[0]?.error ?? '', why);
    }
    assert.deepEqual(receiver.paths, []);
  });

  test('git contexts: denied hosts and private literals are 400 invalid_context naming the host', async () => {
    const c = client(kiln);
    for (const [git, why] of [
      ['https://evil.example.com/o/r.git', /git host evil\.example\.com is denied/],
      ['https://git.internal.example/o/r.git#main', /git host git\.internal\.example is denied/],
      ['git://127.0.0.1:9418/r.git', /git host 127\.0\.0\.1 is a loopback address/],
      ['git://[::1]/r.git', /git host ::1 is a loopback address/],
      ['http://169.254.169.254/r.git', /cloud metadata/],
      ['https://10.0.0.1/o/r.git', /10\.0\.0\.1 is a private address/],
      ['http://0x7f.1/r.git', /127\.0\.0\.1 is a loopback/],
      ['git://localhost/r.git', /localhost is a loopback name/],
    ] as const) {
      const res = await c.post('/v1/builds', { git, output: 'type=tar,dest=a.tar' });
      const body = (await res.json()) as { error: { code: string; message: string } };
      assert.equal(res.status, 400, `${git}: ${JSON.stringify(body)}`);
      assert.equal(body.error.code, 'invalid_context', git);
      assert.match(body.error.message, why, git);
    }
    const res = await c.post('/v1/triggers', {
      provider: 'github',
      repository: 'acme/app',
      branch: 'main',
      cloneUrl: 'git://10.0.0.1/app.git',
    });
    const body = (await res.json()) as { error: { code: string; message: string } };
    assert.equal(res.status, 400, JSON.stringify(body));
    assert.equal(body.error.code, 'invalid_context');
    assert.match(body.error.message, /cloneUrl: the git host 10\.0\.0\.1 is a private address/);
  });
});

describe('SSRF with the allowance on (KILN_EVENT_ALLOWED_NETWORKS=127.0.0.0/8,::1/128)', () => {
  let kiln: TestKiln;
  let receiver: Awaited<ReturnType<typeof startReceiver>>;
  before(async () => {
    receiver = await startReceiver();
    kiln = await startTestKiln({
      worker: true,
      project: 'internal',
      env: { KILN_EVENT_ALLOWED_NETWORKS: '127.0.0.0/8,::1/128' },
      workerDeps: { reconcileIntervalMs: 0 },
    });
  });
  after(async () => {
    await kiln?.stop();
    await receiver?.close();
  });

  test('a loopback receiver, by address or by localhost, gets the event; other private ranges stay refused', async () => {
    const c = client(kiln);
    const ids: string[] = [];
    for (const url of [`http://127.0.0.1:${receiver.port}/a`, `http://localhost:${receiver.port}/b`]) {
      const res = await c.post('/v1/endpoints', { url });
      assert.equal(res.status, 201, await res.clone().text());
      ids.push(((await res.json()) as { id: string }).id);
    }
    const refused = await c.post('/v1/endpoints', { url: 'http://10.0.0.1/hook' });
    assert.equal(refused.status, 400);
    const buildId = await c.finishedBuild();
    for (const id of ids) {
      const d = await c.deliveryOf(id, buildId, 'delivered');
      assert.equal(d.attemptLog[0]?.statusCode, 200);
    }
    assert.deepEqual(receiver.paths.sort(), ['/a', '/b']);
  });
});
