// Builds of different projects are isolated from each other and from the control plane, against
// a real dockerd (its embedded BuildKit 0.8), a standalone buildkitd v0.24 and a real Kiln:
// - `RUN --mount=type=cache` directories are per project: the same cache id names two directories
//   (the worker sets BUILDKIT_CACHE_MOUNT_NS), while a project's own builds share theirs; and no
//   RUN step of one project is a cache hit of another's (the scope host the worker adds);
// - BUILDKIT_* build args are refused naming the arg, wherever a spec arrives; the allow list passes;
// - a worker dials a tcp:// builder over mutual TLS with KILN_BUILDER_TLS_*; without a client
//   certificate the builder fails its health checks with an error that says TLS.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import fs from 'node:fs/promises';
import { after, before, describe, test } from 'node:test';
import { busyboxPath, makeContext } from '../../packages/buildkit-client/test-support/context.js';
import { makeTestPki } from '../../packages/buildkit-client/test-support/pki.js';
import { type Relay, startRelay } from '../../packages/buildkit-client/test-support/relay.js';
import { readTarEntries } from '../../packages/buildkit-client/test-support/tar-entries.js';
import { type GitRepo, startGitRepo } from '../support/git-repo.js';
import { startTestKiln, type TestKiln, waitForStatus } from '../support/kiln.js';

const socket = process.env.KILN_TEST_DOCKER_SOCK;
if (!socket) throw new Error('KILN_TEST_DOCKER_SOCK is not set: run through `npm test`');
const BUILDKITD = process.env.KILN_TEST_BUILDKITD_ADDR;
if (!BUILDKITD) throw new Error('KILN_TEST_BUILDKITD_ADDR is not set: run through `npm test`');

interface BuildJson {
  id: string;
  status: string;
  error?: { code: string; message: string };
  artifact?: { url: string };
}

const RUN = (script: string) =>
  `RUN --mount=type=cache,id=shared,target=/c ${JSON.stringify(['/bin/busybox', 'sh', '-c', script])}`;
const dockerfile = (run: string) => `FROM scratch\nCOPY busybox /bin/busybox\n${run}\n`;
const WRITER = dockerfile(RUN('/bin/busybox echo from-a > /c/a && /bin/busybox echo wrote > /seen'));
const READER = dockerfile(RUN('/bin/busybox cat /c/a > /seen 2>/dev/null || :'));
const sha256 = (text: string) => createHash('sha256').update(text).digest('hex');

/** Submits `Dockerfile` with `token` and a query spec; resolves with the final build. */
async function build(kiln: TestKiln, token: string, text: string, query: string): Promise<BuildJson> {
  const ctx = await makeContext({
    busybox: { content: await fs.readFile(busyboxPath()), mode: 0o755 },
    Dockerfile: text,
  });
  try {
    const api = (p: string, init: RequestInit = {}) =>
      fetch(`${kiln.url}${p}`, { ...init, headers: { ...init.headers, authorization: `Bearer ${token}` } });
    const res = await api(`/v1/builds?${query}`, {
      method: 'POST',
      headers: { 'content-type': 'application/gzip' },
      body: execFileSync('tar', ['-C', ctx.dir, '-czf', '-', '.']),
    });
    assert.equal(res.status, 202, await res.clone().text());
    const { id } = (await res.json()) as BuildJson;
    return await waitForStatus<BuildJson>(api, id, ['succeeded', 'failed', 'canceled'], 120_000);
  } finally {
    await ctx.cleanup();
  }
}

/** The sha256 and size of `/seen` in a succeeded build's tar. */
async function seen(b: BuildJson): Promise<{ sha256: string; size: number }> {
  assert.equal(b.status, 'succeeded', JSON.stringify(b.error));
  const tar = Buffer.from(await (await fetch(b.artifact?.url ?? '')).arrayBuffer());
  const entry = (await readTarEntries(tar)).find((e) => e.name === 'seen');
  assert.ok(entry, 'the artifact holds /seen');
  return { sha256: entry.sha256, size: entry.size };
}

// On both generations: BuildKit 0.13 and later leave a cache mount's id out of a RUN's cache key,
// so there only the project's scope host (projectScopeHost) keeps the steps apart.
for (const [generation, builders] of [
  ['dockerd 20.10 (BuildKit 0.8)', `docker://${socket}`],
  ['buildkitd v0.24', BUILDKITD],
] as const)
  describe(`cache mounts and RUN results are per project on ${generation}`, () => {
    let kiln: TestKiln;
    let tokenB = '';
    before(async () => {
      kiln = await startTestKiln({ worker: true, project: 'cache-a', env: { KILN_BUILDERS: builders } });
      tokenB = await kiln.newToken('cache-b');
    });
    after(async () => {
      await kiln?.stop();
    });

    test("project A's cache mount is not B's of the same id, and A's RUN result never answers B's same step", async () => {
      // Not noCache: BuildKit hands a no-cache RUN fresh cache mounts, which would prove nothing.
      // The project ids are new each run, so nothing of an earlier run can answer a step.
      const q = 'output=type=tar,dest=c.tar&network=none';
      const wrote = await build(kiln, kiln.token, WRITER, q);
      assert.equal((await seen(wrote)).size, 'wrote\n'.length);
      // A's next build sees what it wrote: the mount is kept for the project.
      assert.equal((await seen(await build(kiln, kiln.token, READER, q))).sha256, sha256('from-a\n'));
      // B runs the very same step on the same builder: neither A's mount nor A's result (a
      // cache hit of A's step, which is what A could forge) reaches it.
      assert.deepEqual(await seen(await build(kiln, tokenB, READER, q)), { sha256: sha256(''), size: 0 });
    });
  });

describe('projects are isolated from each other', () => {
  let kiln: TestKiln;
  let tokenB = '';
  const post = (p: string, body: unknown, token = kiln.token) =>
    fetch(`${kiln.url}${p}`, {
      method: 'POST',
      headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
      body: JSON.stringify(body),
    });

  before(async () => {
    kiln = await startTestKiln({ worker: true, project: 'tenant-a' });
    tokenB = await kiln.newToken('tenant-b');
  });
  after(async () => {
    await kiln?.stop();
  });

  test('BUILDKIT_* build args are refused naming the arg: query, JSON git body, webhook trigger', async () => {
    const refused = async (res: Response, name: string) => {
      assert.equal(res.status, 400);
      const { error } = (await res.json()) as { error: { code: string; message: string } };
      assert.equal(error.code, 'invalid_spec');
      assert.match(error.message, new RegExp(`build arg "${name}" is reserved`));
    };
    const upload = await fetch(
      `${kiln.url}/v1/builds?output=type=tar,dest=x.tar&build-arg=BUILDKIT_CACHE_MOUNT_NS=kiln-victim`,
      {
        method: 'POST',
        headers: { authorization: `Bearer ${tokenB}`, 'content-type': 'application/x-tar' },
        body: execFileSync('tar', ['-cf', '-', '--files-from', '/dev/null']),
      },
    );
    await refused(upload, 'BUILDKIT_CACHE_MOUNT_NS');
    await refused(
      await post('/v1/builds', {
        git: 'https://example.com/org/repo.git#main',
        buildArgs: { BUILDKIT_SYNTAX: 'evil/frontend' },
      }),
      'BUILDKIT_SYNTAX',
    );
    await refused(
      await post('/v1/triggers', {
        provider: 'github',
        repository: 'acme/app',
        branch: 'main',
        spec: { output: 'type=tar,dest=app.tar', buildArgs: { buildkit_cache_mount_ns: 'x' } },
      }),
      'buildkit_cache_mount_ns',
    );
  });

  test('allow-listed BUILDKIT_* args are accepted and the build runs', async () => {
    const b = await build(
      kiln,
      kiln.token,
      dockerfile(RUN('/bin/busybox echo ok > /seen')),
      'output=type=tar,dest=ok.tar&network=none&build-arg=BUILDKIT_INLINE_CACHE=1&build-arg=BUILDKIT_CONTEXT_KEEP_GIT_DIR=1',
    );
    assert.equal((await seen(b)).sha256, sha256('ok\n'));
  });
});

// On both generations: they read a Dockerfile's directives differently (which duplicate wins, JSON
// key case), so what one lets through the other might not.
for (const [generation, builders] of [
  ['dockerd 20.10 (BuildKit 0.8)', `docker://${socket}`],
  ['buildkitd v0.24', BUILDKITD],
] as const)
  describe(`frontend selection on ${generation}: # syntax= only for images the operator allows`, () => {
    let kiln: TestKiln;
    let repo: GitRepo;
    const ALLOWED = 'kiln.invalid/frontend:1';
    before(async () => {
      repo = await startGitRepo('syntax');
      kiln = await startTestKiln({
        worker: true,
        env: {
          KILN_ALLOWED_FRONTENDS: ALLOWED,
          KILN_GIT_ALLOWED_NETWORKS: '127.0.0.0/8',
          KILN_BUILDERS: builders,
        },
      });
    });
    after(async () => {
      await kiln?.stop();
      await repo?.stop();
    });
    /** POSTs a context of busybox and `files`, archived in that order (a later hard link is a link entry). */
    const uploadFiles = async (files: Record<string, string | { hardlinkTo: string }>) => {
      const ctx = await makeContext({
        busybox: { content: await fs.readFile(busyboxPath()), mode: 0o755 },
        ...files,
      });
      try {
        return await fetch(`${kiln.url}/v1/builds?output=type=tar,dest=s.tar&network=none&noCache=true`, {
          method: 'POST',
          headers: { authorization: `Bearer ${kiln.token}`, 'content-type': 'application/gzip' },
          body: execFileSync('tar', ['-C', ctx.dir, '-czf', '-', 'busybox', ...Object.keys(files)]),
        });
      } finally {
        await ctx.cleanup();
      }
    };
    const upload = (text: string) => uploadFiles({ Dockerfile: text });
    const body = dockerfile('RUN ["/bin/busybox", "true"]');
    /** The build an accepted POST made, once final. */
    const finalOf = async (res: Response) => {
      assert.equal(res.status, 202, await res.clone().text());
      const api = (p: string) =>
        fetch(`${kiln.url}${p}`, { headers: { authorization: `Bearer ${kiln.token}` } });
      const { id } = (await res.json()) as BuildJson;
      return waitForStatus<BuildJson>(api, id, ['succeeded', 'failed'], 120_000);
    };

    test('a Dockerfile naming another frontend image is 400 invalid_spec, in every form BuildKit reads', async () => {
      for (const text of [
        `# syntax=docker/dockerfile:1\n${body}`,
        `# escape=\\\n#syntax = evil/frontend\n${body}`,
        `// syntax=evil/frontend\n${body}`,
        JSON.stringify({ syntax: 'evil/frontend' }),
        // Newer BuildKit skips a #! first line before it reads directives.
        `#!x\n# syntax=evil/frontend\n${body}`,
        `#!x\n${JSON.stringify({ syntax: 'evil/frontend' })}`,
        `# syntax=${ALLOWED}\n# syntax=evil/frontend\n${body}`,
        `#!${'x'.repeat(70 * 1024)}\n# syntax=evil/frontend\n${body}`,
      ]) {
        const res = await upload(text);
        const what = text.slice(0, 80);
        assert.equal(res.status, 400, what);
        const { error } = (await res.json()) as { error: { code: string; message: string } };
        assert.equal(error.code, 'invalid_spec', what);
        assert.match(
          error.message,
          /(selects the frontend image|cannot tell which frontend image) .*KILN_ALLOWED_FRONTENDS/,
          what,
        );
      }
    });

    test('a Dockerfile that is a hard link to a file naming another frontend fails as invalid_spec, never handed to it', async () => {
      // The upload's check sees a link entry; the worker checks the file BuildKit would read.
      const done = await finalOf(
        await uploadFiles({
          evil: `# syntax=kiln.invalid/evil-frontend\n${body}`,
          Dockerfile: { hardlinkTo: 'evil' },
        }),
      );
      assert.equal(done.status, 'failed');
      assert.equal(done.error?.code, 'invalid_spec', JSON.stringify(done.error));
      assert.match(done.error?.message ?? '', /selects the frontend image "kiln\.invalid\/evil-frontend"/);
    });

    test("a git build's Dockerfile (never seen by Kiln) is built by BuildKit's own frontend, its # syntax= ignored", async () => {
      const commit = repo.commit({
        Dockerfile: '# syntax=kiln.invalid/evil-frontend\nFROM scratch\nCOPY Dockerfile /copied\n',
      });
      const res = await fetch(`${kiln.url}/v1/builds`, {
        method: 'POST',
        headers: { authorization: `Bearer ${kiln.token}`, 'content-type': 'application/json' },
        body: JSON.stringify({
          git: `${repo.gitUrl}#${commit}`,
          output: 'type=tar,dest=g.tar',
          noCache: true,
        }),
      });
      const done = await finalOf(res);
      // Handed to the named image, the build would fail fetching it (as the allowed one does below).
      assert.equal(done.status, 'succeeded', JSON.stringify(done.error));
    });

    // Kiln runs the image it checked (the gateway frontend, `cmdline` set): where BuildKit would read
    // the directive differently from Kiln, it never gets to read it.
    test('a Dockerfile read one way by Kiln and another by BuildKit runs only the image Kiln allowed', async () => {
      const evil = 'kiln.invalid/evil-frontend';
      for (const text of [
        // A \r inside a line: Kiln skips the line, BuildKit's regexp reads it.
        `# syntax=${evil} \rx\n# syntax=${ALLOWED}\n${body}`,
        // JSON keys: BuildKit 0.11-0.13 match them without regard to case, the last one winning.
        JSON.stringify({ syntax: ALLOWED, Syntax: evil }),
      ]) {
        const done = await finalOf(await upload(text));
        assert.equal(done.status, 'failed');
        const message = done.error?.message ?? '';
        assert.match(message, /kiln\.invalid\/frontend/, JSON.stringify(text));
        assert.doesNotMatch(message, /evil-frontend/, JSON.stringify(text));
      }
    });

    test('an allowed image goes to BuildKit, which runs the build through it (here: fails to fetch it)', async () => {
      const done = await finalOf(await upload(`# syntax=${ALLOWED}\n${body}`));
      // No image can be pulled here: BuildKit failing on the frontend image shows it was asked for.
      assert.equal(done.status, 'failed');
      assert.match(done.error?.message ?? '', /kiln\.invalid/);
      // The control: the same Dockerfile without the directive builds with the built-in frontend.
      const ok = await finalOf(await upload(body));
      assert.equal(ok.status, 'succeeded', JSON.stringify(ok.error));
    });
  });

describe('tcp:// builders over mutual TLS', () => {
  const pki = makeTestPki();
  let relay: Relay;

  before(async () => {
    relay = await startRelay(socket, {
      tcp: true,
      tls: {
        key: await fs.readFile(pki.serverKey),
        cert: await fs.readFile(pki.serverCert),
        ca: await fs.readFile(pki.ca),
      },
    });
  });
  after(async () => {
    await relay?.close();
    pki.cleanup();
  });

  test('a worker with KILN_BUILDER_TLS_CA/CERT/KEY builds through the TLS builder', async () => {
    const kiln = await startTestKiln({
      worker: true,
      project: 'tls',
      env: {
        KILN_BUILDERS: relay.address,
        KILN_BUILDER_TLS_CA: pki.ca,
        KILN_BUILDER_TLS_CERT: pki.clientCert,
        KILN_BUILDER_TLS_KEY: pki.clientKey,
        KILN_BUILDER_TLS_SERVER_NAME: 'buildkitd.test',
      },
    });
    try {
      const b = await build(
        kiln,
        kiln.token,
        dockerfile(RUN('/bin/busybox echo tls > /seen')),
        'output=type=tar,dest=t.tar&network=none&noCache=true',
      );
      assert.equal((await seen(b)).sha256, sha256('tls\n'));
    } finally {
      await kiln.stop();
    }
  });

  test('a worker without the client certificate finds the builder unhealthy, with a TLS hint', async () => {
    const kiln = await startTestKiln({
      worker: true,
      project: 'tls-nocert',
      env: { KILN_BUILDERS: relay.address, KILN_BUILDER_TLS_CA: pki.ca },
    });
    try {
      const res = await fetch(`${kiln.url}/v1/builders`, {
        headers: { authorization: `Bearer ${kiln.token}` },
      });
      const { items } = (await res.json()) as {
        items: Array<{ healthy: boolean | null; lastError: string }>;
      };
      assert.equal(items[0]?.healthy, false);
      assert.match(items[0]?.lastError ?? '', /cannot reach BuildKit .*TLS settings/);
    } finally {
      await kiln.stop();
    }
  });
});
