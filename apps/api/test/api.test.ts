// The HTTP API against real PostgreSQL, Redis and a local storage directory (no worker:
// builds stay queued here; the end-to-end tests run them).
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import fs from 'node:fs/promises';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { gzipSync } from 'node:zlib';
import { QUEUE_BUILDS } from '@kiln/core';
import type { Redis } from 'ioredis';
import { startTestKiln, type TestKiln } from '../../../test/support/kiln.js';

const METRICS_TOKEN = 'm'.repeat(40);

/** What fetch takes as a request body (Node's fetch types, not the DOM's). */
type Body = NonNullable<RequestInit['body']>;

/** A tar of the given files made by GNU tar, as a user's `tar -C dir -cf - .` would. */
function tarOf(files: Record<string, string>): Buffer {
  const dir = execFileSync('mktemp', ['-d']).toString().trim();
  for (const [name, content] of Object.entries(files)) {
    execFileSync('mkdir', ['-p', path.dirname(path.join(dir, name))]);
    execFileSync('sh', ['-c', 'cat > "$1"', 'sh', path.join(dir, name)], { input: content });
  }
  const tar = execFileSync('tar', ['-C', dir, '-cf', '-', '.']);
  execFileSync('rm', ['-rf', dir]);
  return tar;
}

describe('API', () => {
  let kiln: TestKiln;
  let dataDir: string;
  let base: string;
  let token: string;
  let otherToken: string;
  let redis: Redis;
  const ctx = tarOf({ Dockerfile: 'FROM scratch\nCOPY a /a\n', a: 'hello' });

  const api = (p: string, init: RequestInit & { auth?: string | null } = {}) => {
    const headers = new Headers(init.headers);
    if (init.auth !== null) headers.set('authorization', `Bearer ${init.auth ?? token}`);
    return fetch(`${base}${p}`, { ...init, headers, redirect: 'manual' });
  };
  const post = (query: string, body: Body, type = 'application/x-tar', extra: Record<string, string> = {}) =>
    api(`/v1/builds${query}`, { method: 'POST', body, headers: { 'content-type': type, ...extra } });

  before(async () => {
    kiln = await startTestKiln({
      project: 'alpha',
      env: { KILN_MAX_CONTEXT_BYTES: String(1024 * 1024), KILN_METRICS_TOKEN: METRICS_TOKEN },
    });
    ({ url: base, token, dataDir, redis } = kiln);
    otherToken = await kiln.newToken('beta');
  });
  after(() => kiln.stop());

  // Every job has a priority (fair scheduling): waiting jobs are in the `prioritized` set.
  const queueLength = async () => redis.zcard(`bull:${QUEUE_BUILDS}:prioritized`);

  test('POST a tar: 202 queued, Location, job enqueued with the build id; GET and list show it', async () => {
    const before = await queueLength();
    const res = await post('?output=type=tar,dest=app.tar&target=builder&build-arg=A=1', ctx);
    assert.equal(res.status, 202);
    const body = (await res.json()) as {
      id: string;
      status: string;
      spec: { output: { dest: string }; target: string };
    };
    assert.equal(body.status, 'queued');
    assert.equal(body.spec.output.dest, 'app.tar');
    assert.equal(body.spec.target, 'builder');
    assert.equal(res.headers.get('location'), `/v1/builds/${body.id}`);
    assert.equal(await queueLength(), before + 1);
    assert.ok(await redis.exists(`bull:${QUEUE_BUILDS}:${body.id}`));

    const got = (await (await api(`/v1/builds/${body.id}`)).json()) as {
      id: string;
      context: { digest: string };
    };
    assert.equal(got.id, body.id);
    assert.match(got.context.digest, /^sha256:[0-9a-f]{64}$/);
    const list = (await (await api('/v1/builds?status=queued&limit=1')).json()) as {
      items: unknown[];
      nextCursor: string | null;
    };
    assert.equal(list.items.length, 1);
  });

  test('gzip and multipart uploads; the same context is stored once (content-addressed)', async () => {
    const gz = await post('?output=type=tar,dest=x.tar', gzipSync(ctx), 'application/gzip');
    assert.equal(gz.status, 202);
    const form = new FormData();
    form.set('spec', JSON.stringify({ output: 'type=tar,dest=m.tar', buildArgs: { V: '2' } }));
    form.set('context', new Blob([ctx]), 'ctx.tar');
    const mp = await api('/v1/builds', { method: 'POST', body: form });
    assert.equal(mp.status, 202, await mp.clone().text());
    const a = (await gz.json()) as { context: { digest: string } };
    const b = (await mp.json()) as {
      context: { digest: string };
      spec: { buildArgs: Record<string, string> };
    };
    assert.equal(a.context.digest, b.context.digest);
    assert.deepEqual(b.spec.buildArgs, { V: '2' });
    // Zero padding after the gzip data, as tape-blocked tools write it, is dropped (it used to
    // leave the request without an answer and its temp file behind).
    const padded = await post(
      '?output=type=tar,dest=p.tar',
      Buffer.concat([gzipSync(ctx), Buffer.alloc(10 * 1024)]),
      'application/gzip',
    );
    assert.equal(padded.status, 202, await padded.clone().text());
    assert.equal(((await padded.json()) as { context: { digest: string } }).context.digest, a.context.digest);
    assert.deepEqual(await fs.readdir(path.join(dataDir, 'tmp')), []);
    const stored = await fs.readdir(path.join(dataDir, 'objects/contexts/sha256'));
    assert.equal(stored.filter((f) => f.endsWith('.tar')).length, 1);
  });

  /** Each answer is 400 invalid_spec with a message matching its pattern. */
  async function allInvalidSpec(refused: Array<[Promise<Response>, RegExp]>): Promise<void> {
    for (const [answer, message] of refused) {
      const res = await answer;
      const json = (await res.json()) as { error: { code: string; message: string } };
      assert.equal(res.status, 400, JSON.stringify(json));
      assert.equal(json.error.code, 'invalid_spec');
      assert.match(json.error.message, message);
    }
  }

  test('a spec field given twice (query, form fields, spec part) is refused, never dropped; build-arg and label add up', async () => {
    const form = (entries: Array<[string, string]>, query = '') => {
      const body = new FormData();
      for (const [k, v] of entries) body.append(k, v);
      body.append('context', new Blob([ctx]), 'ctx.tar');
      return api(`/v1/builds${query}`, { method: 'POST', body });
    };
    const refused: Array<[Promise<Response>, RegExp]> = [
      [
        post(`?buildArgs=${encodeURIComponent('{"A":"1"}')}&build-arg=B=2`, ctx),
        /^buildArgs \(build-arg\) is given more than once in the query$/,
      ],
      [post(`?label=a=b&labels=${encodeURIComponent('{"c":"d"}')}`, ctx), /labels is given/],
      [
        form([['spec', '{"buildArgs":{"A":"1"}}']], '?build-arg=B=2'),
        /in the query and again in the "spec" part/,
      ],
      [
        form([['target', 'y']], '?target=x'),
        /target is given in the query and again in the form field "target"/,
      ],
      [
        form([
          ['spec', '{"target":"y"}'],
          ['target', 'z'],
        ]),
        /target is given in the "spec" part and again/,
      ],
      [
        form([
          ['target', 'x'],
          ['target', 'y'],
        ]),
        /target is given more than once in the form field "target"/,
      ],
    ];
    await allInvalidSpec(refused);
    // As the README says: build-arg=K=V and label=K=V in a form too, repeatable.
    const ok = await form([
      ['build-arg', 'A=1'],
      ['build-arg', 'B=2'],
      ['label', 'l=v'],
    ]);
    assert.equal(ok.status, 202, await ok.clone().text());
    const view = (await ok.json()) as {
      spec: { buildArgs: Record<string, string>; labels: Record<string, string> };
    };
    assert.deepEqual(view.spec.buildArgs, { A: '1', B: '2' });
    assert.deepEqual(view.spec.labels, { l: 'v' });
  });

  test('a JSON body takes the spec fields of the query too: none dropped, one given in both refused', async () => {
    const uploaded = (await (await post('', ctx)).json()) as { context: { digest: string } };
    const json = (query: string, body: object) =>
      post(query, JSON.stringify({ context: uploaded.context.digest, ...body }), 'application/json');
    const ok = await json('?target=stage&build-arg=A=1', {});
    assert.equal(ok.status, 202, await ok.clone().text());
    const view = (await ok.json()) as { spec: { target?: string; buildArgs: Record<string, string> } };
    assert.deepEqual([view.spec.target, view.spec.buildArgs], ['stage', { A: '1' }]);
    const refused: Array<[Promise<Response>, RegExp]> = [
      [json('?target=x', { target: 'y' }), /target is given in the query and again in the JSON body/],
      [json('?secrets=x', {}), /secrets are not accepted in the query string/],
      [json('?frobnicate=1', {}), /unknown parameter "frobnicate"/],
      [
        post(
          '?target=x',
          JSON.stringify({ git: 'https://h.example/r.git', target: 'y' }),
          'application/json',
        ),
        /target is given in the query and again in the JSON body/,
      ],
    ];
    await allInvalidSpec(refused);
  });

  test("auth: missing, wrong and another project's token", async () => {
    assert.equal((await api('/v1/builds', { auth: null })).status, 401);
    const wrong = await api('/v1/builds', { auth: 'kiln_not-a-real-token' });
    assert.equal(wrong.status, 401);
    assert.equal(((await wrong.json()) as { error: { code: string } }).error.code, 'unauthorized');
    const mine = (await (await post('', ctx)).json()) as { id: string };
    for (const p of [
      `/v1/builds/${mine.id}`,
      `/v1/builds/${mine.id}/logs`,
      `/v1/builds/${mine.id}/artifact`,
    ]) {
      const res = await api(p, { auth: otherToken });
      assert.equal(res.status, 404, p);
    }
    assert.equal(
      (await api(`/v1/builds/${mine.id}/cancel`, { method: 'POST', auth: otherToken })).status,
      404,
    );
    const theirs = (await (await api('/v1/builds', { auth: otherToken })).json()) as {
      items: Array<{ id: string }>;
    };
    assert.ok(!theirs.items.some((b) => b.id === mine.id));
  });

  test('Idempotency-Key: same request → same build; same key, other body → 409; oversized key → 400', async () => {
    const key = { 'idempotency-key': 'deploy-42' };
    const first = (await (
      await post('?output=type=tar,dest=i.tar', ctx, 'application/x-tar', key)
    ).json()) as { id: string };
    const again = await post('?output=type=tar,dest=i.tar', ctx, 'application/x-tar', key);
    assert.equal(again.status, 200);
    assert.equal(((await again.json()) as { id: string }).id, first.id);
    const other = await post('?output=type=tar,dest=other.tar', ctx, 'application/x-tar', key);
    assert.equal(other.status, 409);
    assert.equal(((await other.json()) as { error: { code: string } }).error.code, 'conflict');
    const huge = await post('', ctx, 'application/x-tar', { 'idempotency-key': 'k'.repeat(10_000) });
    assert.equal(huge.status, 400);
  });

  test('bad uploads and specs: 4xx with stable codes, nothing enqueued, no temp files left', async () => {
    const before = await queueLength();
    const cases: Array<[string, Body, string, number, string]> = [
      [
        '',
        Buffer.from('this is not a tar at all, not even close'.repeat(20)),
        'application/x-tar',
        400,
        'invalid_context',
      ],
      ['', Buffer.alloc(0), 'application/x-tar', 400, 'invalid_context'],
      ['', tarOf({ 'Dockerfile.dev': 'FROM scratch\n' }), 'application/x-tar', 400, 'invalid_context'],
      [
        '',
        Buffer.concat([ctx, Buffer.alloc(2 * 1024 * 1024)]),
        'application/x-tar',
        413,
        'context_too_large',
      ],
      ['?output=type=tar,mode=max', ctx, 'application/x-tar', 400, 'invalid_spec'],
      ['?output=type=zip', ctx, 'application/x-tar', 400, 'invalid_spec'],
      ['?platform=amd64', ctx, 'application/x-tar', 400, 'invalid_spec'],
      ['?surprise=1', ctx, 'application/x-tar', 400, 'invalid_spec'],
      // JSON names a remote context ({git}); anything else in it is not a context.
      ['', '{"context": "x"}', 'application/json', 400, 'invalid_context'],
      ['', 'x', 'text/plain', 415, 'unsupported_media_type'],
      // A JSON body is no context, however large.
      ['', `{"git":"${'x'.repeat(1024 * 1024)}"}`, 'application/json', 413, 'payload_too_large'],
      // Text PostgreSQL cannot store, in a spec from the query or in any JSON body.
      [`?buildArgs=${encodeURIComponent('{"A":"x\\ud800"}')}`, ctx, 'application/x-tar', 400, 'invalid_spec'],
      ['?target=a%00b', ctx, 'application/x-tar', 400, 'invalid_spec'],
      [
        '',
        '{"git":"https://h.example/r.git","labels":{"a":"x\\ud800"}}',
        'application/json',
        400,
        'invalid_request',
      ],
    ];
    for (const [query, body, type, status, code] of cases) {
      const res = await post(query, body, type);
      const json = (await res.json()) as { error: { code: string; message: string } };
      assert.equal(res.status, status, `${query} ${type}: ${JSON.stringify(json)}`);
      assert.equal(json.error.code, code);
      assert.ok(json.error.message.length > 5);
    }
    assert.equal(await queueLength(), before);
    assert.deepEqual(await fs.readdir(path.join(dataDir, 'tmp')), []);
  });

  test('tokens: create one (secret shown once), use it, revoke it: 401 at once; others are untouched', async () => {
    const created = await api('/v1/tokens', {
      method: 'POST',
      body: JSON.stringify({ name: 'ci' }),
      headers: { 'content-type': 'application/json' },
    });
    assert.equal(created.status, 201);
    const t = (await created.json()) as { id: string; name: string; token: string; revokedAt: null };
    assert.match(t.token, /^kiln_/);
    assert.equal((await api('/v1/builds', { auth: t.token })).status, 200);
    const list = (await (await api('/v1/tokens')).json()) as { items: Array<{ id: string; token?: string }> };
    assert.ok(list.items.some((i) => i.id === t.id));
    assert.ok(
      list.items.every((i) => i.token === undefined),
      'secrets are never listed',
    );
    // Another project cannot see or revoke it.
    assert.equal((await api(`/v1/tokens/${t.id}`, { method: 'DELETE', auth: otherToken })).status, 404);
    assert.equal((await api('/v1/builds', { auth: t.token })).status, 200);
    assert.equal((await api(`/v1/tokens/${t.id}`, { method: 'DELETE' })).status, 204);
    const after = await api('/v1/builds', { auth: t.token });
    assert.equal(after.status, 401);
    assert.equal(((await after.json()) as { error: { code: string } }).error.code, 'unauthorized');
    assert.equal((await api('/v1/builds')).status, 200, 'the token that revoked it still works');
    assert.equal(
      (await api(`/v1/tokens/${t.id}`, { method: 'DELETE' })).status,
      204,
      'revoking twice is fine',
    );
    const bad = await api('/v1/tokens', {
      method: 'POST',
      body: JSON.stringify({ name: '' }),
      headers: { 'content-type': 'application/json' },
    });
    assert.equal(bad.status, 400);
  });

  test('cancel a queued build; a final build cannot be canceled again', async () => {
    const b = (await (await post('', ctx)).json()) as { id: string };
    const res = await api(`/v1/builds/${b.id}/cancel`, { method: 'POST' });
    assert.equal(res.status, 202);
    assert.equal(((await res.json()) as { status: string }).status, 'canceled');
    assert.equal(await redis.exists(`bull:${QUEUE_BUILDS}:${b.id}`), 0);
    assert.equal((await api(`/v1/builds/${b.id}/cancel`, { method: 'POST' })).status, 409);
    assert.equal((await api(`/v1/builds/${b.id}/artifact`)).status, 409);
  });

  test('health, readiness, metrics and OpenAPI docs', async () => {
    assert.equal((await api('/healthz', { auth: null })).status, 200);
    const ready = await api('/readyz', { auth: null });
    assert.equal(ready.status, 200, await ready.clone().text());
    assert.equal((await api('/metrics', { auth: null })).status, 401);
    assert.equal((await api('/metrics')).status, 401, 'a project token is not the metrics token');
    const metrics = await (await api('/metrics', { auth: METRICS_TOKEN })).text();
    assert.match(metrics, /kiln_builds_total\{event="queued",status="queued"\} [1-9]\d*/);
    assert.match(metrics, /kiln_bytes_total\{kind="context"\} [1-9]\d*/);
    assert.match(metrics, /kiln_queue_jobs\{state="waiting"\} \d+/);
    const doc = (await (await api('/docs/json', { auth: null })).json()) as {
      paths: Record<string, unknown>;
    };
    assert.ok(doc.paths['/v1/builds']);
    assert.ok(doc.paths['/v1/builds/{id}/cancel']);
  });

  test('a NUL or a lone surrogate in any JSON body is a 400, not a database error', async () => {
    for (const name of ['a\\u0000b', 'a\\ud800b']) {
      const res = await api('/v1/tokens', {
        method: 'POST',
        body: `{"name":"${name}"}`,
        headers: { 'content-type': 'application/json' },
      });
      const json = (await res.json()) as { error: { code: string; message: string } };
      assert.equal(res.status, 400, JSON.stringify(json));
      assert.equal(json.error.code, 'invalid_request');
      assert.match(
        json.error.message,
        /^the JSON body is not text Kiln can store: \$\.name holds a (NUL character|lone UTF-16 surrogate)/,
      );
    }
    // The webhook receivers, which anyone can reach, parse their own payloads.
    const hook = await api('/v1/hooks/github', {
      auth: null,
      method: 'POST',
      body: '{"repository":{"full_name":"o\\u0000rg/repo"}}',
      headers: {
        'content-type': 'application/json',
        'x-github-event': 'push',
        'x-github-delivery': 'd1',
        'x-hub-signature-256': 'sha256=00',
      },
    });
    assert.equal(hook.status, 400);
    assert.equal(((await hook.json()) as { error: { code: string } }).error.code, 'invalid_request');
  });

  test('unknown route and malformed id give JSON errors', async () => {
    const res = await api('/v1/nope');
    assert.equal(res.status, 404);
    assert.equal(((await res.json()) as { error: { code: string } }).error.code, 'not_found');
    const bad = await api('/v1/builds/..%2F..%2Fetc');
    assert.equal(bad.status, 400);
    // Refused by the router before any route: the same error shape.
    for (const [p, message] of [
      [`/v1/builds/${'A'.repeat(101)}`, 'a path parameter (an ID or name) is too long'],
      [`/ui/${'a'.repeat(101)}`, 'a path parameter (an ID or name) is too long'],
      ['/v1/builds/%E0%A4%A', 'the path is not valid percent-encoding'],
    ] as const) {
      const res = await api(p);
      assert.equal(res.status, 400, p);
      assert.deepEqual(await res.json(), { error: { code: 'invalid_request', message } });
    }
  });
});
