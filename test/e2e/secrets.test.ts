// Build secrets end to end: secrets sent in the multipart JSON spec reach `RUN
// --mount=type=secret` (the artifact holds what the RUN copied), and afterwards the values are
// nowhere else: not in any PostgreSQL row, the stored log, Redis, the API's JSON, the files Kiln
// keeps besides the artifact, or the API's and the worker's logs (captured at trace level).
// Also: the query string refuses secrets, a build whose secrets Redis lost fails with
// secrets_unavailable instead of building without them, and secrets bypass the result cache.
// Once per BuildKit generation (dockerd 20.10's 0.8, buildkitd v0.24.0): the Secrets service is theirs.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import fs from 'node:fs/promises';
import path from 'node:path';
import { PassThrough } from 'node:stream';
import { after, before, describe, test } from 'node:test';
import { buildSecretsKey, createLogger } from '@kiln/core';
import { createWorker, type KilnWorker } from '@kiln/worker';
import pg from 'pg';
import { pino } from 'pino';
import { busyboxPath, makeContext } from '../../packages/buildkit-client/test-support/context.js';
import { readTarEntries } from '../../packages/buildkit-client/test-support/tar-entries.js';
import { type StartedS3rver, startS3rver } from '../../packages/core/test-support/s3rver.js';
import { generations } from '../support/generations.js';
import { startTestKiln, type TestKiln, waitForStatus } from '../support/kiln.js';

const TEXT = `npm-token-${process.pid}-${Date.now()}-zq`;
const BYTES = Buffer.concat([
  Buffer.from([0xff, 0x00, 0xfe]),
  Buffer.from(`bin-${process.pid}-${Date.now()}`),
]);
/** Every form a leaked value could take. */
const NEEDLES = [
  TEXT,
  BYTES.subarray(3).toString(),
  BYTES.toString('base64'),
  Buffer.from(TEXT).toString('base64'),
];
const script = '/bin/busybox cat /run/secrets/npm /run/secrets/blob > /out';
const DOCKERFILE = `FROM scratch\nCOPY busybox /bin/busybox\nRUN --mount=type=secret,id=npm,required=true --mount=type=secret,id=blob,required=true ${JSON.stringify(['/bin/busybox', 'sh', '-c', script])}\n`;

interface BuildJson {
  id: string;
  status: string;
  error?: { code: string; message: string };
  artifact?: { url: string };
}

function leaks(haystack: string | Buffer, where: string): void {
  const text = Buffer.isBuffer(haystack) ? haystack.toString('latin1') : haystack;
  for (const needle of NEEDLES) {
    const n = Buffer.from(needle).toString('latin1');
    assert.ok(!text.includes(n), `a secret value appears in ${where}`);
  }
}

/** Redirects a real Kiln logger (createLogger's redact paths) into `sink` at trace level. */
function capture(logger: unknown, sink: PassThrough): void {
  const l = logger as Record<symbol, unknown> & { level: string };
  l[pino.symbols.streamSym] = sink;
  l.level = 'trace';
}

for (const generation of generations())
  describe(`build secrets end to end on ${generation.name}`, () => {
    let kiln: TestKiln;
    let worker: KilnWorker | undefined;
    let ctxDir = '';
    let cleanup = async () => {};
    let logText = '';
    const sink = new PassThrough();
    sink.on('data', (c: Buffer) => {
      logText += c.toString('latin1');
    });

    const api = (p: string, init: RequestInit = {}) => {
      const headers = new Headers(init.headers);
      headers.set('authorization', `Bearer ${kiln.token}`);
      return fetch(p.startsWith('http') ? p : `${kiln.url}${p}`, { ...init, headers, redirect: 'manual' });
    };
    const tarGz = () => execFileSync('tar', ['-C', ctxDir, '-czf', '-', '.']);
    const submit = async (spec: object, query = ''): Promise<Response> => {
      const form = new FormData();
      form.set('spec', JSON.stringify(spec));
      form.set('context', new Blob([tarGz()], { type: 'application/gzip' }), 'context.tar.gz');
      return api(`/v1/builds${query}`, { method: 'POST', body: form });
    };
    const secretSpec = () => ({
      output: 'type=tar,dest=app.tar',
      network: 'none',
      secrets: { npm: TEXT, blob: { base64: BYTES.toString('base64') } },
    });
    const waitFor = (id: string, statuses: string[], timeoutMs = 120_000) =>
      waitForStatus<BuildJson>(api, id, statuses, timeoutMs);

    before(async () => {
      const ctx = await makeContext({
        busybox: { content: await fs.readFile(busyboxPath()), mode: 0o755 },
        Dockerfile: DOCKERFILE,
      });
      ctxDir = ctx.dir;
      cleanup = ctx.cleanup;
      // No worker yet: the first test looks at what waits in Redis before a worker takes the build.
      kiln = await startTestKiln({ project: 'secrets', env: { KILN_BUILDERS: generation.address } });
      capture(kiln.deps.logger, sink);
    });
    after(async () => {
      await worker?.stop();
      await kiln?.stop();
      await cleanup();
    });

    let built = '';
    let lost = '';

    test('secrets in the query string are refused, and the rejected URL is not logged', async () => {
      for (const q of [
        `?secrets=${encodeURIComponent(JSON.stringify({ npm: TEXT }))}`,
        `?secret=id=npm,src=${TEXT}`,
      ]) {
        const res = await submit({ output: 'type=tar,dest=app.tar' }, q);
        assert.equal(res.status, 400);
        const body = (await res.json()) as { error: { code: string; message: string } };
        assert.equal(body.error.code, 'invalid_spec');
        assert.match(body.error.message, /not accepted in the query string/);
        leaks(JSON.stringify(body), 'an error body');
      }
      const bad = await submit({ output: 'type=tar', secrets: { 'a/b': TEXT } });
      assert.equal(bad.status, 400);
      leaks(await bad.text(), 'an error body');
    });

    test('queued: values wait in Redis (with a TTL) only; a cancel deletes them; no result-cache key', async () => {
      const first = await submit(secretSpec());
      assert.equal(first.status, 202, await first.clone().text());
      built = ((await first.json()) as BuildJson).id;
      const ttl = await kiln.redis.ttl(buildSecretsKey(built));
      assert.ok(ttl > kiln.config.buildTimeoutSeconds, `ttl ${ttl}`);
      // Sealed under the credentials key (this Kiln has one: its signing key).
      const stored = await kiln.redis.hgetallBuffer(buildSecretsKey(built));
      assert.ok(stored[':sealed'] && stored.blob && !stored.blob.includes(BYTES), 'sealed in Redis');

      // The same request again is not answered from the result cache: it is queued too.
      const again = await submit(secretSpec());
      assert.equal(again.status, 202);
      const canceled = ((await again.json()) as BuildJson).id;
      assert.equal((await api(`/v1/builds/${canceled}/cancel`, { method: 'POST' })).status, 202);
      assert.equal(await kiln.redis.exists(buildSecretsKey(canceled)), 0);

      const third = await submit(secretSpec());
      lost = ((await third.json()) as BuildJson).id;
      await kiln.redis.del(buildSecretsKey(lost)); // as if Redis had lost them

      const rows = await kiln.deps.db.build.findMany({ where: { id: { in: [built, canceled, lost] } } });
      for (const row of rows) {
        assert.equal(row.cacheKey, null);
        assert.deepEqual((row.spec as { secrets?: string[] }).secrets, ['blob', 'npm']);
      }
    });

    test('a worker runs them: the RUN sees the secrets; lost secrets fail the build, it never runs without them', async () => {
      const logger = createLogger('kiln-worker', 'trace');
      capture(logger, sink);
      worker = createWorker(kiln.config, { logger });
      await worker.start();

      const done = await waitFor(built, ['succeeded', 'failed']);
      assert.equal(done.status, 'succeeded', JSON.stringify(done.error));
      const artifact = Buffer.from(await (await fetch(done.artifact?.url ?? '')).arrayBuffer());
      const out = (await readTarEntries(artifact)).find((e) => e.name === 'out');
      const expected = createHash('sha256')
        .update(Buffer.concat([Buffer.from(TEXT), BYTES]))
        .digest('hex');
      assert.equal(out?.sha256, expected, 'the RUN did not see the secrets');

      const failed = await waitFor(lost, ['succeeded', 'failed']);
      assert.equal(failed.status, 'failed');
      assert.equal(failed.error?.code, 'secrets_unavailable');
      const attempts = await kiln.deps.db.buildAttempt.count({ where: { buildId: lost } });
      assert.equal(attempts, 0, 'no builder was leased for it');
    });

    test('after the builds: the values are in no database row, stored log, Redis key, API JSON, kept file or log line', async () => {
      // PostgreSQL: every row of every table, as text.
      const client = new pg.Client({ connectionString: kiln.db.url });
      await client.connect();
      try {
        const tables = await client.query<{ schemaname: string; tablename: string }>(
          "SELECT schemaname, tablename FROM pg_tables WHERE schemaname NOT IN ('pg_catalog', 'information_schema')",
        );
        assert.ok(tables.rows.some((t) => t.tablename === 'Build'));
        for (const { schemaname, tablename } of tables.rows) {
          const rows = await client.query(`SELECT t::text AS row FROM "${schemaname}"."${tablename}" t`);
          leaks(rows.rows.map((r: { row: string }) => r.row).join('\n'), `table ${tablename}`);
        }
      } finally {
        await client.end();
      }

      // Redis: every key of Kiln's db, whatever its type; the secrets keys are gone.
      for (const id of [built, lost]) assert.equal(await kiln.redis.exists(buildSecretsKey(id)), 0);
      for (const key of await kiln.redis.keys('*')) {
        const type = await kiln.redis.type(key);
        const dump =
          type === 'string'
            ? await kiln.redis.getBuffer(key)
            : type === 'hash'
              ? await kiln.redis.hgetallBuffer(key)
              : type === 'list'
                ? await kiln.redis.lrangeBuffer(key, 0, -1)
                : type === 'set'
                  ? await kiln.redis.smembersBuffer(key)
                  : type === 'zset'
                    ? await kiln.redis.zrangeBuffer(key, 0, -1)
                    : type === 'stream'
                      ? await kiln.redis.xrangeBuffer(key, '-', '+')
                      : await kiln.redis.dumpBuffer(key);
        leaks(
          JSON.stringify(dump, (_k, v) =>
            v?.type === 'Buffer' ? Buffer.from(v.data).toString('latin1') : v,
          ),
          `Redis ${key}`,
        );
      }

      // The API: build views, the list, the stored logs.
      for (const id of [built, lost]) {
        leaks(await (await api(`/v1/builds/${id}`)).text(), 'the build view');
        const log = await (await api(`/v1/builds/${id}/logs`)).text();
        leaks(log, 'the stored log');
      }
      leaks(await (await api('/v1/builds')).text(), 'the build list');

      // Every file Kiln keeps (contexts, logs, temp files) except the artifact, which holds /out by design.
      const files = await fs.readdir(kiln.dataDir, { recursive: true, withFileTypes: true });
      let logs = 0;
      for (const f of files) {
        if (!f.isFile()) continue;
        const p = path.join(f.parentPath, f.name);
        if (p.includes(`${path.sep}artifacts${path.sep}`)) continue;
        if (p.includes(`${path.sep}logs${path.sep}`)) logs++;
        leaks(await fs.readFile(p), p);
      }
      assert.ok(logs >= 1, 'no stored log file was checked');

      // The API's and the worker's pino output, at trace level.
      assert.match(logText, /build finished/);
      leaks(logText, 'the API or worker log');
    });
  });

describe('a Kiln without a credentials key (S3 storage, no KILN_CREDENTIALS_KEY or KILN_SIGNING_KEY)', () => {
  let s3: StartedS3rver;
  let kiln: TestKiln;
  before(async () => {
    s3 = await startS3rver();
    kiln = await startTestKiln({
      project: 'no-key',
      env: {
        KILN_SIGNING_KEY: undefined,
        KILN_S3_BUCKET: s3.bucket,
        KILN_S3_ENDPOINT: s3.endpoint,
        KILN_S3_REGION: s3.region,
        KILN_S3_FORCE_PATH_STYLE: 'true',
        AWS_ACCESS_KEY_ID: s3.accessKeyId,
        AWS_SECRET_ACCESS_KEY: s3.secretAccessKey,
      },
    });
  });
  after(async () => {
    await kiln?.stop();
    await s3?.stop();
  });

  test('refuses build secrets (409, naming the setting) before reading the context: in clear they would reach Redis files', async () => {
    assert.equal(kiln.config.credentialsKeys, undefined);
    const submit = (spec: object) => {
      const form = new FormData();
      form.set('spec', JSON.stringify(spec));
      // Not a tar at all: a refusal that came after reading it would say so instead.
      form.set('context', new Blob([Buffer.from('not a tarball')]), 'context.tar');
      return fetch(`${kiln.url}/v1/builds`, {
        method: 'POST',
        headers: { authorization: `Bearer ${kiln.token}` },
        body: form,
      });
    };
    const refused = await submit({ output: 'type=tar,dest=app.tar', secrets: { npm: TEXT } });
    const body = (await refused.json()) as { error: { code: string; message: string } };
    assert.equal(refused.status, 409, JSON.stringify(body));
    assert.equal(body.error.code, 'conflict');
    assert.match(body.error.message, /KILN_CREDENTIALS_KEY/);
    assert.deepEqual(await kiln.redis.keys('*secrets*'), [], 'nothing of them reached Redis');
    // Without secrets the same request is read on (and refused for its context, not the key).
    const plain = await submit({ output: 'type=tar,dest=app.tar' });
    assert.equal(plain.status, 400, await plain.text());
  });
});
