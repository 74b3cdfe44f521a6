// Secrets in logs: after a session of requests that carry API tokens (valid, revoked, unknown, in
// headers and in a query string) and signed download URLs (in responses, redirects, downloads and
// tampered copies), the API's log must contain neither a token nor a `sig=` value.
//
// The logger is the real one (createApiDeps → createLogger, with its redact paths); only its
// destination is redirected into a PassThrough the test reads, and its level is raised to `trace`
// so every line any layer (Fastify, @fastify/multipart, the app) writes is seen. Lines at `info` and
// above (what the default KILN_LOG_LEVEL writes) are judged separately from the trace/debug ones.
import assert from 'node:assert/strict';
import { PassThrough, Readable } from 'node:stream';
import { after, before, describe, test } from 'node:test';
import { setTimeout as delay } from 'node:timers/promises';
import { pino } from 'pino';
import { bootstrapProject } from '../../apps/api/src/index.js';
import { DOCKERFILE, file, tar } from '../../packages/core/src/context/test-helpers.js';
import { KiB, multipart, type RawResponse, request, revokeToken, startApi, type TestApi } from './helpers.js';

interface LogLine {
  level: number;
  msg?: string;
  [k: string]: unknown;
}

/** Every string in a log line, Buffers (serialized as {type: 'Buffer', data}) decoded too. */
function strings(value: unknown, out: string[] = []): string[] {
  if (typeof value === 'string') out.push(value);
  else if (Array.isArray(value)) for (const v of value) strings(v, out);
  else if (value && typeof value === 'object') {
    const o = value as { type?: unknown; data?: unknown };
    if (o.type === 'Buffer' && Array.isArray(o.data))
      out.push(Buffer.from(o.data as number[]).toString('latin1'));
    for (const [k, v] of Object.entries(value)) {
      out.push(k);
      strings(v, out);
    }
  }
  return out;
}

describe('logs never carry tokens or signed URLs', () => {
  let api: TestApi;
  let raw = '';
  const secrets = new Map<string, string>(); // secret → what it is
  const sigs = new Set<string>();

  const addUrl = (url: string | undefined, what: string) => {
    if (!url) return;
    const sig = new URL(url, 'http://x').searchParams.get('sig');
    assert.ok(sig, `no sig in ${url}`);
    sigs.add(sig);
    secrets.set(sig, `sig of ${what}`);
  };

  before(async () => {
    const sink = new PassThrough();
    sink.setEncoding('utf8');
    sink.on('data', (chunk: string) => {
      raw += chunk;
    });
    api = await startApi({
      beforeBuild: (deps) => {
        const logger = deps.logger as unknown as Record<symbol, unknown> & { level: string };
        logger[pino.symbols.streamSym] = sink;
        logger.level = 'trace';
      },
    });
    secrets.set(api.token, 'the API token');
    secrets.set(api.otherToken, "another project's token");
    secrets.set('h'.repeat(40), 'the URL signing key');

    const revoked = await bootstrapProject(api.db.url, 'alpha', 'revoked');
    await revokeToken(api, revoked);
    secrets.set(revoked, 'a revoked token');
    const unknown = 'kiln_never-issued-but-still-a-secret-0123';
    secrets.set(unknown, 'an unknown token');

    const bearer = (t: string) => ({ authorization: `Bearer ${t}` });
    const ctx = tar([DOCKERFILE, file('a', 'x')]);
    // `what` only names the step for a reader of this session.
    const go = (_what: string, p: Promise<RawResponse>) => p;

    // Uploads (raw and multipart) with the token, a bad upload, revoked and unknown tokens.
    const created = await go(
      'raw POST',
      request(api.base, '/v1/builds?output=type=tar,dest=a.tar', {
        method: 'POST',
        body: ctx,
        headers: { ...bearer(api.token), 'content-type': 'application/x-tar' },
      }),
    );
    assert.equal(created.status, 202, created.text);
    const form = multipart([
      { name: 'output', value: 'type=tar,dest=m.tar' },
      { name: 'context', filename: 'ctx.tar', value: ctx },
    ]);
    const mp = await go(
      'multipart POST',
      request(api.base, '/v1/builds', {
        method: 'POST',
        body: form.body,
        headers: { ...bearer(api.token), 'content-type': form.contentType },
      }),
    );
    assert.equal(mp.status, 202, mp.text);
    await go(
      'bad upload',
      request(api.base, '/v1/builds', {
        method: 'POST',
        body: Buffer.from('not a tar'),
        headers: { ...bearer(api.token), 'content-type': 'application/x-tar' },
      }),
    );
    await go('revoked token', request(api.base, '/v1/builds', { headers: bearer(revoked) }));
    await go('unknown token', request(api.base, '/v1/builds', { headers: bearer(unknown) }));
    await go(
      'token in a query string',
      request(api.base, `/v1/builds?access_token=${api.token}`, { headers: bearer(api.token) }),
    );
    await go(
      'token in an unknown route',
      request(api.base, `/v1/tokens/${api.token}`, { headers: bearer(api.token) }),
    );
    await go(
      'token in an upload query',
      request(api.base, `/v1/builds?token=${api.token}`, {
        method: 'POST',
        body: ctx,
        headers: { ...bearer(api.token), 'content-type': 'application/x-tar' },
      }),
    );
    await go(
      'token in a 100 KB header request',
      request(api.base, '/v1/builds', {
        headers: { ...bearer(api.token), 'x-padding': 'p'.repeat(100 * KiB) },
      }),
    );
    await go(
      'Basic credentials',
      request(api.base, '/v1/builds', {
        headers: { authorization: `Basic ${Buffer.from(`u:${api.token}`).toString('base64')}` },
      }),
    );

    // A succeeded build with an artifact: its view and its redirect carry signed URLs.
    const alpha = await api.deps.db.project.findUniqueOrThrow({ where: { name: 'alpha' } });
    await api.deps.storage.put('artifacts/logs/app.tar', Readable.from([Buffer.from('bytes')]));
    const built = await api.deps.db.build.create({
      data: {
        projectId: alpha.id,
        status: 'succeeded',
        spec: { output: { type: 'tar', dest: 'app.tar', attrs: {} } },
        contextDigest: 'sha256:00',
        contextSize: BigInt(1),
        contextKey: 'contexts/sha256/00.tar',
        artifactKey: 'artifacts/logs/app.tar',
        artifactSize: BigInt(5),
        startedAt: new Date(),
        finishedAt: new Date(),
      },
    });
    const view = await go(
      'GET a succeeded build',
      request(api.base, `/v1/builds/${built.id}`, { headers: bearer(api.token) }),
    );
    const artifactUrl = (view.json as { artifact?: { url: string } }).artifact?.url;
    addUrl(artifactUrl, 'the artifact URL in a build view');
    await go(
      'GET the list',
      request(api.base, '/v1/builds?status=succeeded', { headers: bearer(api.token) }),
    );
    const redirect = await go(
      'GET /artifact',
      request(api.base, `/v1/builds/${built.id}/artifact`, { headers: bearer(api.token) }),
    );
    assert.equal(redirect.status, 302);
    const location = String(redirect.headers.location);
    addUrl(location, 'the /artifact redirect');
    assert.equal((await go('download', request(api.base, location))).status, 200);
    await go('download with a Range', request(api.base, location, { headers: { range: 'bytes=1-2' } }));
    // Resuming a download that is complete ('bytes' is 5 bytes): 416 with the size, as wget -c expects.
    const past = await go(
      'download past its end',
      request(api.base, location, { headers: { range: 'bytes=5-' } }),
    );
    assert.equal(past.status, 416);
    assert.equal(past.headers['content-range'], 'bytes */5');
    const tampered = new URL(location);
    tampered.searchParams.set('filename', 'evil.sh');
    assert.equal((await go('tampered download', request(api.base, tampered.toString()))).status, 403);
    const malformed = new URL(location);
    malformed.pathname = '/v1/files/artifacts/%25E0%25A4%25A';
    await go('malformed path download', request(api.base, malformed.toString()));
    const short = await api.deps.storage.signedUrl('artifacts/logs/app.tar', { expiresInSeconds: 1 });
    addUrl(short, 'a 1-second URL');
    await delay(Math.max(0, Number(new URL(short).searchParams.get('expires')) * 1000 - Date.now()) + 1100);
    assert.equal((await go('expired download', request(api.base, short))).status, 403);
    const gone = await api.deps.storage.signedUrl('artifacts/logs/gone.tar', { expiresInSeconds: 60 });
    addUrl(gone, 'a URL of a missing object');
    assert.equal((await go('download of a missing object', request(api.base, gone))).status, 404);
    await go('a sig on an unknown route', request(api.base, `/v1/nothing?sig=${[...sigs][0]}`));
    await go(
      'a sig in a build query',
      request(api.base, `/v1/builds?cursor=${[...sigs][0]}`, { headers: bearer(api.token) }),
    );
    await go(
      'logs of a build',
      request(api.base, `/v1/builds/${built.id}/logs`, { headers: bearer(api.token) }),
    );
    await go(
      'cancel with the token',
      request(api.base, `/v1/builds/${(created.json as { id: string }).id}/cancel`, {
        method: 'POST',
        headers: bearer(api.token),
      }),
    );
    assert.ok(sigs.size >= 3, 'the session saw signed URLs');
    // Pino writes synchronously to the sink; give the last 'data' events a turn.
    await delay(100);
  });
  after(async () => {
    await api?.close();
  });

  const lines = (): LogLine[] =>
    raw
      .split('\n')
      .filter((l) => l.trim() !== '')
      .map((l) => JSON.parse(l) as LogLine);
  const leaks = (selected: LogLine[]) => {
    const found: string[] = [];
    for (const line of selected) {
      const text = strings(line).join('\n');
      for (const [secret, what] of secrets) {
        if (text.includes(secret)) found.push(`${what} in ${JSON.stringify(line).slice(0, 400)}`);
      }
      if (/[?&]sig=[0-9a-f]{16}/.test(text))
        found.push(`a sig= value in ${JSON.stringify(line).slice(0, 400)}`);
    }
    return found;
  };

  test('the log was captured (JSON lines from the app, Fastify and its plugins)', () => {
    const all = lines();
    assert.ok(all.length > 20, `${all.length} lines`);
    assert.ok(all.some((l) => l.msg === 'request'));
    assert.ok(all.some((l) => l.msg === 'request rejected'));
  });

  test('at info and above (the default level): no token, no signing key, no sig= value', () => {
    assert.deepEqual(leaks(lines().filter((l) => l.level >= 30)), []);
  });

  test('each request is one line naming its route pattern and status, never its URL', () => {
    const requests = lines().filter((l) => l.msg === 'request');
    assert.ok(requests.length > 10);
    for (const l of requests) {
      const r = l as { method?: string; route?: string; statusCode?: number; url?: unknown; req?: unknown };
      assert.ok(r.method && r.statusCode, JSON.stringify(l));
      assert.match(r.route ?? '', /^(\/[\w:.*-]*)+$|^\(no route\)$/, JSON.stringify(l));
      assert.equal(r.url, undefined, JSON.stringify(l));
      assert.equal(r.req, undefined, JSON.stringify(l));
    }
    assert.ok(requests.some((l) => (l as { route?: string }).route === '/v1/builds/:id'));
  });

  test('at debug and trace: no token, no signing key, no sig= value', () => {
    assert.deepEqual(leaks(lines().filter((l) => l.level < 30)), []);
  });
});
