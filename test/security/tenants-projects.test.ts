// Hostile tenants, projects and quotas: against a real API, worker, PostgreSQL, Redis and dockerd.
// The operator manages projects with its own token; project tokens are scoped; one project cannot
// exceed its quotas, and cannot starve another project's builds by queueing many.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import fs from 'node:fs/promises';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { busyboxPath, makeContext } from '../../packages/buildkit-client/test-support/context.js';
import { startTestKiln, type TestKiln, waitForStatus } from '../support/kiln.js';

const socket = process.env.KILN_TEST_DOCKER_SOCK;
if (!socket) throw new Error('KILN_TEST_DOCKER_SOCK is not set: run through `npm test`');

const OPERATOR = 'o'.repeat(40);
const RUN = (script: string) => `RUN ["/bin/busybox", "sh", "-c", ${JSON.stringify(script)}]`;

/** The files below `dir` (none when it does not exist): attempts store under directories of their own. */
async function filesUnder(dir: string): Promise<string[]> {
  const entries = await fs.readdir(dir, { recursive: true, withFileTypes: true }).catch(() => []);
  return entries.filter((e) => !e.isDirectory()).map((e) => path.join(e.parentPath, e.name));
}

interface BuildJson {
  id: string;
  status: string;
  startedAt: string | null;
  error?: { code: string; message: string };
}
interface ErrorJson {
  error: { code: string; message: string };
}

/** HTTP helpers over one test Kiln: projects made through the operator's API, uploads, builds. */
function tenants(kiln: TestKiln, busybox: Buffer) {
  const call = (token: string, p: string, init: RequestInit = {}) => {
    const headers = new Headers(init.headers);
    headers.set('authorization', `Bearer ${token}`);
    if (typeof init.body === 'string') headers.set('content-type', 'application/json');
    return fetch(`${kiln.url}${p}`, { ...init, headers });
  };
  const json = (method: string, body: unknown) => ({ method, body: JSON.stringify(body) });
  return {
    call,
    json,
    /** A gzip context whose Dockerfile is `lines` after busybox. */
    async context(lines: string[]): Promise<Buffer> {
      const ctx = await makeContext({
        busybox: { content: busybox, mode: 0o755 },
        Dockerfile: ['FROM scratch', 'COPY busybox /bin/busybox', ...lines, ''].join('\n'),
      });
      try {
        return execFileSync('tar', ['-C', ctx.dir, '-czf', '-', '.']);
      } finally {
        await ctx.cleanup();
      }
    },
    post: (token: string, body: Buffer, query = 'output=type=tar,dest=o.tar&network=none&noCache=true') =>
      call(token, `/v1/builds?${query}`, {
        method: 'POST',
        body,
        headers: { 'content-type': 'application/gzip' },
      }),
    /** Creates a project through the operator's API and returns a token of `scope`. */
    async project(name: string, quotas: Record<string, number> = {}, scope = 'manage'): Promise<string> {
      const created = await call(OPERATOR, '/v1/admin/projects', json('POST', { name, quotas }));
      assert.equal(created.status, 201, await created.clone().text());
      const res = await call(
        OPERATOR,
        `/v1/admin/projects/${name}/tokens`,
        json('POST', { name: 'first', scope }),
      );
      assert.equal(res.status, 201, await res.clone().text());
      return ((await res.json()) as { token: string }).token;
    },
    errorOf: async (res: Response) => ((await res.json()) as ErrorJson).error,
  };
}

describe('tenants: projects, scopes, quotas and fairness', () => {
  let kiln: TestKiln;
  let t: ReturnType<typeof tenants>;
  before(async () => {
    // No worker: builds stay queued; the worker's part is in the next suite.
    kiln = await startTestKiln({ env: { KILN_OPERATOR_TOKEN: OPERATOR } });
    t = tenants(kiln, await fs.readFile(busyboxPath()));
  });
  after(() => kiln.stop());

  test('the operator API needs the operator token; projects are created, listed, disabled', async () => {
    assert.equal(
      (await t.call(kiln.token, '/v1/admin/projects')).status,
      401,
      'a project token is not the operator',
    );
    assert.equal((await fetch(`${kiln.url}/v1/admin/projects`)).status, 401);
    const token = await t.project('ops-a', { queuedBuilds: 7 });
    const listed = (await (await t.call(OPERATOR, '/v1/admin/projects')).json()) as {
      items: Array<{
        name: string;
        quotas: { queuedBuilds: number | null };
        effectiveQuotas: { queuedBuilds: number };
      }>;
    };
    const a = listed.items.find((p) => p.name === 'ops-a');
    assert.equal(a?.quotas.queuedBuilds, 7);
    assert.equal(a?.effectiveQuotas.queuedBuilds, 7);
    assert.equal(
      (await t.call(OPERATOR, '/v1/admin/projects', t.json('POST', { name: 'ops-a' }))).status,
      409,
    );
    assert.equal((await t.call(token, '/v1/builds')).status, 200);
    const disabled = await t.call(OPERATOR, '/v1/admin/projects/ops-a', t.json('PATCH', { disabled: true }));
    assert.equal(disabled.status, 200);
    // At once, although the token was just used (and cached).
    const refused = await t.call(token, '/v1/builds');
    assert.equal(refused.status, 403);
    assert.equal((await t.errorOf(refused)).code, 'forbidden');
    await t.call(OPERATOR, '/v1/admin/projects/ops-a', t.json('PATCH', { disabled: false }));
    assert.equal((await t.call(token, '/v1/builds')).status, 200);
    // A project named with text PostgreSQL cannot store: 400, not a driver error's 500.
    for (const ref of ['a%00b', 'a%ED%A0%80b']) {
      const res = await t.call(OPERATOR, `/v1/admin/projects/${ref}`);
      assert.equal(res.status, 400, `${ref}: ${await res.clone().text()}`);
      assert.equal((await t.errorOf(res)).code, 'invalid_request');
    }
  });

  test('scopes: read ⊂ build ⊂ manage; no token mints a wider one', async () => {
    const manage = await t.project('scopes');
    const mint = async (by: string, scope: string) =>
      t.call(by, '/v1/tokens', t.json('POST', { name: scope, scope }));
    const read = ((await (await mint(manage, 'read')).json()) as { token: string; scope: string }).token;
    const buildRes = await mint(manage, 'build');
    assert.equal(buildRes.status, 201);
    const build = ((await buildRes.json()) as { token: string }).token;
    const body = await t.context(['COPY busybox /out']);

    assert.equal((await t.call(read, '/v1/builds')).status, 200);
    const readPost = await t.post(read, body);
    assert.equal(readPost.status, 403);
    assert.match((await t.errorOf(readPost)).message, /scope "build"/);
    const built = await t.post(build, body);
    assert.equal(built.status, 202);
    const { id } = (await built.json()) as { id: string };
    // A build token manages nothing: tokens, triggers, endpoints and their delivery log (reads included).
    for (const [p, init] of [
      ['/v1/tokens', t.json('POST', { name: 'x', scope: 'read' })],
      ['/v1/tokens', {}],
      ['/v1/endpoints', {}],
      ['/v1/triggers', {}],
      [`/v1/builds/${id}/events`, {}],
    ] as const) {
      assert.equal((await t.call(build, p, init)).status, 403, p);
    }
    // A manage token mints any scope up to its own; a build token mints none (above), and the
    // scope a token gets by default is its creator's.
    const byDefault = (await (await t.call(manage, '/v1/tokens', t.json('POST', { name: 'd' }))).json()) as {
      scope: string;
    };
    assert.equal(byDefault.scope, 'manage');
    assert.equal((await mint(manage, 'admin')).status, 400);
  });

  test('quota: queued builds over the limit are 429 quota_exceeded, naming the limit', async () => {
    const token = await t.project('queued', { queuedBuilds: 2 });
    const body = await t.context([RUN('sleep 30')]);
    assert.equal((await t.post(token, body)).status, 202);
    assert.equal((await t.post(token, body)).status, 202);
    const over = await t.post(token, body);
    assert.equal(over.status, 429);
    const error = await t.errorOf(over);
    assert.equal(error.code, 'quota_exceeded');
    assert.match(error.message, /queued builds: 2/);
    // Another project is not affected.
    assert.equal((await t.post(await t.project('queued-other'), body)).status, 202);
    const queued = (await (await t.call(token, '/v1/builds?status=queued')).json()) as { items: BuildJson[] };
    for (const b of queued.items) await t.call(token, `/v1/builds/${b.id}/cancel`, { method: 'POST' });
    // Canceled builds no longer count.
    assert.equal((await t.post(token, body)).status, 202);
  });
  test('quota: 50 concurrent POSTs against a queued-builds quota of 10 queue exactly 10', async () => {
    const token = await t.project('burst', { queuedBuilds: 10 });
    const body = await t.context([RUN('sleep 30')]);
    const answers = await Promise.all(Array.from({ length: 50 }, () => t.post(token, body)));
    const statuses = answers.map((r) => r.status);
    assert.equal(statuses.filter((s) => s === 202).length, 10, JSON.stringify(statuses));
    assert.equal(statuses.filter((s) => s === 429).length, 40);
    const over = answers.find((r) => r.status === 429) as Response;
    assert.match((await t.errorOf(over)).message, /queued builds: 10/);
    const queued = (await (await t.call(token, '/v1/builds?status=queued&limit=100')).json()) as {
      items: BuildJson[];
    };
    assert.equal(queued.items.length, 10);
  });

  test('an upload takes as long whether or not another project stored the same bytes (no timing oracle)', async () => {
    const context = await t.context(['COPY busybox /oracle']);
    const objects = path.join(kiln.dataDir, 'objects', 'contexts', 'sha256');
    const before = new Set(await fs.readdir(objects).catch(() => []));
    const first = await t.project('oracle-a');
    assert.equal((await t.post(first, context)).status, 202);
    const [name] = (await fs.readdir(objects)).filter((n) => !before.has(n));
    assert.ok(name, 'the upload was stored');
    const object = path.join(objects, name);
    // Each put writes a new file and renames it into place: a new inode says it was written.
    const inode = async () => (await fs.stat(object)).ino;
    const stored = await inode();
    assert.equal((await t.post(first, context)).status, 202);
    assert.equal(await inode(), stored, 'a context the project stored already is not written again');
    // Another project's identical upload is written as if new: skipping it would answer sooner.
    assert.equal((await t.post(await t.project('oracle-b'), context)).status, 202);
    assert.notEqual(await inode(), stored);
  });

  test('quota: stored bytes count each context once per project, whoever shares it; over it 429', async () => {
    const usage = async (name: string) => {
      const res = await t.call(OPERATOR, `/v1/admin/projects/${name}`);
      return ((await res.json()) as { usage: { storedBytes: number } }).usage.storedBytes;
    };
    const first = await t.context(['COPY busybox /one']);
    const second = await t.context(['COPY busybox /two']);
    // Another project holding the same context already changes nothing for this one.
    const other = await t.project('stored-other');
    assert.equal((await t.post(other, first)).status, 202);
    const size = await usage('stored-other');
    assert.ok(size > 1024 * 1024, `a context with busybox is ${size} bytes`);

    const token = await t.project('stored', { storedBytes: Math.floor(size * 1.5) });
    assert.equal((await t.post(token, first)).status, 202);
    assert.equal(await usage('stored'), size, 'the shared context is charged in full');
    assert.equal((await t.post(token, first)).status, 202, 'a context the project holds costs nothing');
    assert.equal(await usage('stored'), size);
    const over = await t.post(token, second);
    assert.equal(over.status, 429);
    const error = await t.errorOf(over);
    assert.equal(error.code, 'quota_exceeded');
    assert.match(error.message, new RegExp(`stored bytes: ${Math.floor(size * 1.5)}`));
    assert.equal(await usage('stored'), size, 'a refused POST charges nothing');
    // The operator raises the limit (or drops the override): the POST goes in.
    await t.call(OPERATOR, '/v1/admin/projects/stored', t.json('PATCH', { quotas: { storedBytes: null } }));
    assert.equal((await t.post(token, second)).status, 202);
    assert.ok((await usage('stored')) > size);
  });
});

describe('tenants: the worker enforces running and artifact quotas and schedules fairly', () => {
  let kiln: TestKiln;
  let t: ReturnType<typeof tenants>;
  const waitFor = (token: string, id: string, statuses: string[], timeoutMs = 120_000) =>
    waitForStatus<BuildJson>((p) => t.call(token, p), id, statuses, timeoutMs);

  before(async () => {
    // One builder with two slots; jobs handed back (every slot busy) are tried again after 0.5-1 s.
    kiln = await startTestKiln({
      worker: true,
      env: { KILN_OPERATOR_TOKEN: OPERATOR, KILN_BUILDERS: `docker://${socket}=2`, KILN_BUILD_ATTEMPTS: '1' },
      workerDeps: { handBackDelayMs: 500 },
    });
    t = tenants(kiln, await fs.readFile(busyboxPath()));
  });
  after(() => kiln.stop());

  test('artifact bytes: an export past the limit fails output_too_large and nothing is stored', async () => {
    const token = await t.project('artifacts', { artifactBytes: 64 * 1024 });
    const body = await t.context([
      RUN('/bin/busybox dd if=/dev/zero of=/big bs=1024 count=1024 2>/dev/null'),
      'FROM scratch',
      'COPY --from=0 /big /big',
    ]);
    const res = await t.post(token, body);
    assert.equal(res.status, 202);
    const { id } = (await res.json()) as BuildJson;
    const done = await waitFor(token, id, ['succeeded', 'failed']);
    assert.equal(done.status, 'failed');
    assert.equal(done.error?.code, 'output_too_large');
    assert.match(done.error?.message ?? '', /65536 bytes/);
    const stored = await filesUnder(path.join(kiln.dataDir, 'objects', 'artifacts', id));
    assert.deepEqual(stored, [], 'a partial artifact (or its temp file) was kept');
    // Under the limit, the same project builds.
    const small = await t.post(
      token,
      await t.context([RUN('echo small > /small'), 'FROM scratch', 'COPY --from=0 /small /small']),
    );
    const ok = await waitFor(token, ((await small.json()) as BuildJson).id, ['succeeded', 'failed']);
    assert.equal(ok.status, 'succeeded', JSON.stringify(ok.error));
  });

  test('stored bytes: an export that would pass what the quota leaves fails output_too_large, nothing stored', async () => {
    const usage = async () => {
      const res = await t.call(OPERATOR, '/v1/admin/projects/stored-w');
      return ((await res.json()) as { usage: { storedBytes: number } }).usage.storedBytes;
    };
    const token = await t.project('stored-w');
    // One context for both builds (the artifact's size is a build arg), so the second adds only its artifact.
    const body = await t.context([
      'ARG KIB=1',
      RUN('/bin/busybox dd if=/dev/zero of=/out bs=1024 count=$KIB 2>/dev/null'),
      'FROM scratch',
      'COPY --from=0 /out /out',
    ]);
    const build = async (kib: number) => {
      const res = await t.post(
        token,
        body,
        `output=type=tar,dest=o.tar&network=none&noCache=true&build-arg=KIB=${kib}`,
      );
      assert.equal(res.status, 202, await res.clone().text());
      return waitFor(token, ((await res.json()) as BuildJson).id, ['succeeded', 'failed']);
    };
    const small = await build(1);
    assert.equal(small.status, 'succeeded', JSON.stringify(small.error));
    const used = await usage();
    const limit = used + 64 * 1024;
    await t.call(
      OPERATOR,
      '/v1/admin/projects/stored-w',
      t.json('PATCH', { quotas: { storedBytes: limit } }),
    );
    const big = await build(1024);
    assert.equal(big.status, 'failed');
    assert.equal(big.error?.code, 'output_too_large');
    assert.match(big.error?.message ?? '', new RegExp(`stored bytes: ${limit}`));
    const stored = await filesUnder(path.join(kiln.dataDir, 'objects', 'artifacts', big.id));
    assert.deepEqual(stored, [], 'a partial artifact (or its temp file) was kept');
    assert.equal(await usage(), used);
    // What fits still builds, and is charged.
    const fits = await build(8);
    assert.equal(fits.status, 'succeeded', JSON.stringify(fits.error));
    assert.ok((await usage()) > used);
  });

  test("log bytes: a project's own budget truncates its build's log, with the marker", async () => {
    const token = await t.project('logs', { logBytes: 64 * 1024 });
    const res = await t.post(
      token,
      await t.context([RUN('/bin/busybox yes kiln-log-line | /bin/busybox head -c 1048576')]),
    );
    const { id } = (await res.json()) as BuildJson;
    assert.equal((await waitFor(token, id, ['succeeded', 'failed'])).status, 'succeeded');
    const log = await (await t.call(token, `/v1/builds/${id}/logs`)).text();
    assert.match(log, /\[kiln: log truncated after 64 KiB; the build goes on\]/);
    assert.ok(Buffer.byteLength(log) <= 64 * 1024 + 16 * 1024, `the log has ${Buffer.byteLength(log)} bytes`);
  });

  test('running builds: a project at its limit waits while another project uses the free slot', async () => {
    const limited = await t.project('running-1', { runningBuilds: 1 });
    const other = await t.project('running-other');
    const body = await t.context([RUN('sleep 2')]);
    const ids: string[] = [];
    for (let i = 0; i < 3; i++) ids.push(((await (await t.post(limited, body)).json()) as BuildJson).id);
    let most = 0;
    let otherStarted = false;
    const otherId = ((await (await t.post(other, body)).json()) as BuildJson).id;
    const end = Date.now() + 120_000;
    for (;;) {
      const list = (await (await t.call(limited, '/v1/builds?limit=10')).json()) as { items: BuildJson[] };
      most = Math.max(most, list.items.filter((b) => b.status === 'running').length);
      const o = (await (await t.call(other, `/v1/builds/${otherId}`)).json()) as BuildJson;
      otherStarted ||= o.status !== 'queued';
      if (list.items.every((b) => b.status === 'succeeded' || b.status === 'failed')) break;
      assert.ok(Date.now() < end, 'the limited project did not finish');
      await new Promise((r) => setTimeout(r, 100));
    }
    assert.equal(most, 1, 'the project ran more builds at once than its limit');
    assert.ok(otherStarted);
    for (const id of ids)
      assert.equal((await waitFor(limited, id, ['succeeded', 'failed'])).status, 'succeeded');
  });

  test("fairness: with project A holding 200 queued builds, project B's build takes the next free slot", async () => {
    const a = await t.project('fair-a');
    const b = await t.project('fair-b');
    const body = await t.context([RUN('sleep 1')]);
    const aIds: string[] = [];
    for (let i = 0; i < 200; i++) {
      const res = await t.post(a, body);
      assert.equal(res.status, 202, await res.clone().text());
      aIds.push(((await res.json()) as BuildJson).id);
    }
    await waitFor(a, aIds[0] as string, ['running', 'succeeded']);
    const submitted = Date.now();
    const bRes = await t.post(b, body);
    const bId = ((await bRes.json()) as BuildJson).id;
    const bBuild = await waitFor(b, bId, ['running', 'succeeded', 'failed'], 60_000);
    const bStarted = Date.parse(bBuild.startedAt ?? '');
    const waited = (bStarted - submitted) / 1000;
    // A's builds that started after B was submitted and before B started: none should, since
    // B ranks first in line for the next slot that frees.
    const aRows = await Promise.all(
      aIds.slice(0, 20).map(async (id) => (await (await t.call(a, `/v1/builds/${id}`)).json()) as BuildJson),
    );
    const overtook = aRows.filter((r) => {
      const started = r.startedAt ? Date.parse(r.startedAt) : Number.NaN;
      return started > submitted && started < bStarted;
    }).length;
    console.log(
      `  [tenants] fairness: B started ${waited.toFixed(2)} s after it was submitted, behind 200 of A's builds (2 slots, A's builds run ~1 s); A builds that started in between: ${overtook}`,
    );
    assert.ok(overtook <= 1, `${overtook} of A's builds started before B's`);
    assert.ok(waited < 20, `B waited ${waited} s`);
    for (const id of aIds) await t.call(a, `/v1/builds/${id}/cancel`, { method: 'POST' });
  });
});
