// Image push end to end: a project stores its login to a registry (encrypted at rest, never
// shown again), a build with `type=image,name=…,push=true` on buildkitd v0.24.0 pushes through
// the session's Auth service, and the manifest pulled back from the registry (Debian's
// docker-registry with basic auth on loopback) has the digest the build view reports. Another
// project without the login is refused by the registry; bad image outputs and internal registry
// addresses are 400s; a `build` token cannot set logins.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { credentialsKeysOf, RegistryCredentialStore } from '@kiln/core';
import { startRegistry, type TestRegistry } from '../../packages/buildkit-client/test-support/registry.js';
import { startTestKiln, type TestKiln } from '../support/kiln.js';
import { type ApiClient, apiClient, busyboxContext, pgQuery, ROOT, tgz } from '../support/processes.js';

const BUILDKITD = process.env.KILN_TEST_BUILDKITD_ADDR;
if (!BUILDKITD) throw new Error('KILN_TEST_BUILDKITD_ADDR is not set: run through `npm test`');
const KILN_BIN = path.join(ROOT, 'apps/cli/bin/kiln.js');
const USER = 'ci-bot';
const PASSWORD = `registry-pw-${process.pid}-${Date.now()}`;

interface View {
  id: string;
  status: string;
  error?: { code: string; message: string };
  image?: { name: string; digest: string };
  artifact?: unknown;
}

let kiln: TestKiln;
const LOGINS_PER_PROJECT = 3;
let reg: TestRegistry;
let registry: string;
let owner: ApiClient;
let context: Buffer;

before(async () => {
  reg = await startRegistry(USER, PASSWORD);
  registry = reg.host;
  kiln = await startTestKiln({
    worker: true,
    env: {
      KILN_BUILDERS: BUILDKITD,
      KILN_REGISTRY_ALLOWED_NETWORKS: '127.0.0.0/8',
      KILN_REGISTRY_LOGINS_PER_PROJECT: String(LOGINS_PER_PROJECT),
    },
  });
  owner = apiClient(kiln.url, kiln.token);
  const ctx = await busyboxContext('FROM scratch\nCOPY busybox /bin/busybox\nCOPY app.txt /app.txt\n', {
    'app.txt': `app ${Date.now()}\n`,
  });
  context = await tgz(ctx.dir);
  await ctx.cleanup();
});

after(async () => {
  await kiln?.stop();
  await reg?.stop();
});

const imageOutput = (repo: string, extra = ',push=true,registry.insecure=true') =>
  `output=${encodeURIComponent(`type=image,name=${registry}/${repo}:v1${extra}`)}`;

async function build(client: ApiClient, repo: string): Promise<View> {
  const b = await client.submit(context, imageOutput(repo));
  return (await client.waitFor(b.id, ['succeeded', 'failed', 'canceled'], 120_000)) as unknown as View;
}

const manifestDigest = (repo: string) => reg.manifestDigest(repo);

const put = (client: ApiClient, host: string, body: unknown) =>
  client.api(`/v1/registry-credentials/${encodeURIComponent(host)}`, {
    method: 'PUT',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify(body),
  });

describe('image push', () => {
  test('with the project login: pushed, and the registry holds the digest Kiln reports', async () => {
    const saved = await put(owner, registry, { username: USER, password: PASSWORD });
    assert.equal(saved.status, 200, await saved.clone().text());
    const listed = await (await owner.api('/v1/registry-credentials')).text();
    assert.match(listed, new RegExp(registry.replace(/\./g, '\\.')));
    assert.ok(!listed.includes(PASSWORD), 'the list never shows the secret');

    const b = await build(owner, 'team/app');
    assert.equal(b.status, 'succeeded', JSON.stringify(b.error));
    assert.ok(b.image, JSON.stringify(b));
    assert.equal(b.image.name, `${registry}/team/app:v1`);
    assert.match(b.image.digest, /^sha256:[0-9a-f]{64}$/);
    assert.equal(b.artifact, undefined);
    assert.equal(await manifestDigest('team/app'), b.image.digest);

    // At rest: only ciphertext; the log says nothing of it either.
    const rows = await pgQuery<{ secretCiphertext: string }>(
      kiln.db.url,
      'SELECT "secretCiphertext" FROM "RegistryCredential"',
    );
    assert.equal(rows.length, 1);
    assert.ok(!rows[0]?.secretCiphertext.includes(PASSWORD));
    assert.ok(!(await owner.logs(b.id)).includes(PASSWORD));
    // A push is never answered from the result cache.
    const again = await build(owner, 'team/app');
    assert.equal(again.status, 'succeeded');
    assert.notEqual(again.id, b.id);
  });

  test('kiln build -o type=image,…,push=true pushes and prints NAME@DIGEST', async () => {
    const ctx = await busyboxContext('FROM scratch\nCOPY busybox /bin/busybox\nCOPY cli.txt /cli.txt\n', {
      'cli.txt': `from the cli ${Date.now()}\n`,
    });
    try {
      const name = `${registry}/team/cli:v1`;
      const { stdout, stderr, code } = await new Promise<{
        stdout: string;
        stderr: string;
        code: number | null;
      }>((resolve, reject) => {
        const child = spawn(
          process.execPath,
          [
            KILN_BIN,
            'build',
            '--progress',
            'plain',
            '-o',
            `type=image,name=${name},push=true,registry.insecure=true`,
            '.',
          ],
          {
            cwd: ctx.dir,
            env: { ...process.env, KILN_URL: kiln.url, KILN_TOKEN: kiln.token, HOME: ctx.dir },
          },
        );
        let out = '';
        let err = '';
        child.stdout.on('data', (c: Buffer) => {
          out += c.toString();
        });
        child.stderr.on('data', (c: Buffer) => {
          err += c.toString();
        });
        child.on('error', reject);
        child.on('close', (c) => resolve({ stdout: out, stderr: err, code: c }));
      });
      assert.equal(code, 0, stderr);
      const [ref, digest] = stdout.trim().split('@');
      assert.equal(ref, name);
      assert.equal(await manifestDigest('team/cli'), digest);
    } finally {
      await ctx.cleanup();
    }
  });

  test('another project has no login: the registry refuses its push', async () => {
    const other = apiClient(kiln.url, await kiln.newToken('other-team'));
    const b = await build(other, 'other/app');
    assert.equal(b.status, 'failed');
    assert.equal(b.error?.code, 'build_failed');
    assert.match(b.error?.message ?? '', /401|unauthorized|authoriz/i);
    assert.equal(await manifestDigest('other/app'), null);
  });

  test("a login this Kiln's key no longer opens: listed unusable, the build's log says why, set again it works", async () => {
    const lost = apiClient(kiln.url, await kiln.newToken('key-changed'));
    const [row] = await pgQuery<{ id: string }>(kiln.db.url, 'SELECT id FROM "Project" WHERE name = $1', [
      'key-changed',
    ]);
    const projectId = row?.id ?? assert.fail('no project');
    // Sealed under a key this Kiln neither has nor lists in KILN_CREDENTIALS_PREVIOUS_KEYS.
    await new RegistryCredentialStore(kiln.deps.db, credentialsKeysOf('o'.repeat(40))).put(
      projectId,
      registry,
      { username: USER, secret: PASSWORD },
      LOGINS_PER_PROJECT,
    );
    const usable = async () =>
      (
        (await (await lost.api('/v1/registry-credentials')).json()) as { items: { usable: boolean }[] }
      ).items.map((i) => i.usable);
    assert.deepEqual(await usable(), [false]);
    const b = await build(lost, 'lost/app');
    assert.equal(b.status, 'failed');
    assert.match(b.error?.message ?? '', /401|unauthorized|authoriz/i);
    assert.match(
      await lost.logs(b.id),
      new RegExp(`login to ${registry.replace(/\./g, '\\.')} cannot be read .*PUT /v1/registry-credentials/`),
    );

    assert.equal((await put(lost, registry, { username: USER, password: PASSWORD })).status, 200);
    assert.deepEqual(await usable(), [true]);
    assert.equal((await build(lost, 'lost/app')).status, 'succeeded');
  });

  test('bad image outputs and internal registries are refused before anything runs', async () => {
    for (const [query, pattern] of [
      [imageOutput('team/app', ''), /push=true/],
      [`output=${encodeURIComponent('type=image,push=true')}`, /needs name=/],
      [`output=${encodeURIComponent('type=image,name=Team/App,push=true')}`, /not an image reference/],
      [
        `output=${encodeURIComponent('type=image,name=10.0.0.1:5000/a:b,push=true')}`,
        /private|does not push/,
      ],
      [`output=${encodeURIComponent('type=image,name=169.254.169.254/a:b,push=true')}`, /does not push/],
    ] as const) {
      const res = await owner.api(`/v1/builds?${query}`, {
        method: 'POST',
        body: context,
        headers: { 'content-type': 'application/gzip' },
      });
      assert.equal(res.status, 400, query);
      const body = (await res.json()) as { error: { code: string; message: string } };
      assert.equal(body.error.code, 'invalid_spec');
      assert.match(body.error.message, pattern, query);
    }
  });

  test('a project holds logins to at most KILN_REGISTRY_LOGINS_PER_PROJECT registries', async () => {
    const other = apiClient(kiln.url, await kiln.newToken('logins'));
    const hosts = ['a.example', 'b.example', 'c.example', 'd.example'];
    const statuses = await Promise.all(
      hosts.map(async (h) => (await put(other, h, { username: 'u', password: 'p' })).status),
    );
    assert.deepEqual(
      statuses.sort(),
      [200, 200, 200, 409],
      'concurrent puts of new hosts take exactly the places left',
    );
    const listed = (await (await other.api('/v1/registry-credentials')).json()) as {
      items: { host: string }[];
    };
    assert.equal(listed.items.length, LOGINS_PER_PROJECT);
    const held = listed.items[0]?.host ?? assert.fail('no login');
    const refused = hosts.find((h) => !listed.items.some((i) => i.host === h)) ?? assert.fail('none refused');
    const again = await put(other, refused, { username: 'u', password: 'p' });
    assert.equal(again.status, 409);
    assert.match(
      ((await again.json()) as { error: { message: string } }).error.message,
      /at most 3 registries/,
    );
    assert.equal(
      (await put(other, held, { username: 'u2', password: 'p2' })).status,
      200,
      'a held host is updated',
    );
    // Another project's places are its own.
    assert.equal((await put(owner, 'e.example', { username: 'u', password: 'p' })).status, 200);
    assert.equal((await owner.api(`/v1/registry-credentials/e.example`, { method: 'DELETE' })).status, 204);
  });

  test('logins are managed with a manage token only, and deleted for good', async () => {
    const created = await owner.api('/v1/tokens', {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ name: 'ci', scope: 'build' }),
    });
    const { token } = (await created.json()) as { token: string };
    const builder = apiClient(kiln.url, token);
    assert.equal((await put(builder, registry, { username: 'x', password: 'y' })).status, 403);
    assert.equal((await put(owner, 'not a host!', { username: 'x', password: 'y' })).status, 400);
    assert.equal((await put(owner, registry, { username: USER })).status, 400);
    const gone = await owner.api(`/v1/registry-credentials/${encodeURIComponent(registry)}`, {
      method: 'DELETE',
    });
    assert.equal(gone.status, 204);
    assert.equal(
      ((await (await owner.api('/v1/registry-credentials')).json()) as { items: unknown[] }).items.length,
      0,
    );
  });
});
