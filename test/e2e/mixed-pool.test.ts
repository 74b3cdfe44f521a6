// One worker over a pool of both BuildKit generations at once: dockerd 20.10's embedded
// BuildKit 0.8 and the standalone buildkitd v0.24.0. Builds spread over both; what only one can
// do (oci/docker exporters, a platform only it reports such as linux/amd64/v3) goes to that
// one; what none can do is refused at POST (422 no_capable_builder), or by the worker when the
// API could not know.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import fs from 'node:fs/promises';
import http from 'node:http';
import { after, before, describe, test } from 'node:test';
import { builderCapabilitiesKey } from '@kiln/core';
import { busyboxPath, makeContext } from '../../packages/buildkit-client/test-support/context.js';
import { readTarEntries } from '../../packages/buildkit-client/test-support/tar-entries.js';
import { buildkitdGeneration, dockerdGeneration, reportedPlatforms } from '../support/generations.js';
import { type GitRepo, startGitRepo } from '../support/git-repo.js';
import { startTestKiln, type TestKiln, waitForStatus } from '../support/kiln.js';

const dockerd = dockerdGeneration();
const buildkitd = buildkitdGeneration();

const RUN = (script: string) => `RUN ["/bin/busybox", "sh", "-c", ${JSON.stringify(script)}]`;
// The sleep keeps each build on its builder long enough for the next ones to need the other.
const DOCKERFILE = [
  'FROM scratch AS builder',
  'ARG N=0',
  'COPY busybox /bin/busybox',
  RUN('/bin/busybox sleep 1; /bin/busybox mkdir -p /out && echo build-$N > /out/app'),
  'FROM scratch',
  'COPY --from=builder /out/app /app',
  '',
].join('\n');

interface BuildJson {
  id: string;
  status: string;
  attempts: number;
  builder: string | null;
  error?: { code: string; message: string };
  artifact?: { url: string };
}

interface BuilderJson {
  address: string;
  capabilities: { version: string | null; platforms: string[]; features: string[] } | null;
}

/** A ustar header announcing a 1 GiB file: an upload that is still valid after its first bytes. */
function tarHeaderOfBigFile(): Buffer {
  const h = Buffer.alloc(512);
  const put = (offset: number, text: string) => h.write(text, offset, 'latin1');
  put(0, 'big');
  put(100, '0000644\0');
  put(108, '0000000\0');
  put(116, '0000000\0');
  put(124, `${(1024 ** 3).toString(8).padStart(11, '0')}\0`);
  put(136, '00000000000\0');
  put(148, '        ');
  put(156, '0');
  put(257, 'ustar\0');
  put(263, '00');
  const sum = h.reduce((a, b) => a + b, 0);
  put(148, `${sum.toString(8).padStart(6, '0')}\0 `);
  return h;
}

function client(kiln: () => TestKiln) {
  const api = (p: string, init: RequestInit = {}) => {
    const headers = new Headers(init.headers);
    headers.set('authorization', `Bearer ${kiln().token}`);
    return fetch(`${kiln().url}${p}`, { ...init, headers });
  };
  return {
    api,
    post: (dir: string, query: string) =>
      api(`/v1/builds?${query}`, {
        method: 'POST',
        body: execFileSync('tar', ['-C', dir, '-czf', '-', '.']),
        headers: { 'content-type': 'application/gzip' },
      }),
    waitFor: (id: string) => waitForStatus<BuildJson>(api, id, ['succeeded', 'failed', 'canceled'], 120_000),
  };
}

describe('a mixed pool: dockerd 20.10 (BuildKit 0.8) and buildkitd v0.24.0 behind one worker', () => {
  let kiln: TestKiln;
  let repo: GitRepo;
  let ctx: Awaited<ReturnType<typeof makeContext>>;
  const { api, post, waitFor } = client(() => kiln);
  let n = 0;
  /** Submits a build that no earlier one can answer from the result cache; its accepted view. */
  const submit = async (query: string): Promise<BuildJson> => {
    const res = await post(ctx.dir, `${query}&network=none&build-arg=N=${++n}-${Date.now()}`);
    assert.equal(res.status, 202, await res.clone().text());
    return (await res.json()) as BuildJson;
  };

  before(async () => {
    ctx = await makeContext({
      busybox: { content: await fs.readFile(busyboxPath()), mode: 0o755 },
      Dockerfile: DOCKERFILE,
    });
    repo = await startGitRepo('mixed');
    kiln = await startTestKiln({
      worker: true,
      project: 'mixed',
      env: {
        KILN_GIT_ALLOWED_NETWORKS: '127.0.0.0/8',
        KILN_BUILDERS: `${dockerd.address}=1,${buildkitd.address}=1`,
        KILN_WORKER_CONCURRENCY: '6',
        KILN_BUILD_ATTEMPTS: '1',
      },
      // Checks only at start: the last test removes the published capabilities and must not race a recheck.
      workerDeps: { handBackDelayMs: 200, healthIntervalMs: 0 },
    });
  });
  after(async () => {
    await kiln?.stop();
    await ctx?.cleanup();
    await repo?.stop();
  });

  test("git builds of a repository's subdirectory run only on buildkitd (BuildKit 0.8 has no git subdir)", async () => {
    repo.commit({ 'app/Dockerfile': 'FROM scratch\nCOPY hello.txt /hello.txt\n', 'app/hello.txt': 'hi\n' });
    const submitGit = async (i: number) => {
      const res = await api('/v1/builds', {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({
          git: `${repo.httpUrl}#main:app`,
          output: 'type=tar,dest=g.tar',
          buildArgs: { N: `${i}` },
        }),
      });
      assert.equal(res.status, 202, await res.clone().text());
      return (await res.json()) as BuildJson;
    };
    const done = await Promise.all((await Promise.all([1, 2, 3].map(submitGit))).map((b) => waitFor(b.id)));
    for (const b of done) assert.equal(b.status, 'succeeded', `${b.id}: ${JSON.stringify(b.error)}`);
    assert.deepEqual(
      done.map((b) => b.builder),
      [buildkitd.address, buildkitd.address, buildkitd.address],
    );
  });

  test('GET /v1/builders: each builder’s BuildKit version, platforms and features', async () => {
    const { items } = (await (await api('/v1/builders')).json()) as { items: BuilderJson[] };
    assert.deepEqual(
      items.map((b) => b.address),
      [dockerd.address, buildkitd.address],
    );
    // dockerd 20.10 answers Control.Info with Unimplemented: no version, moby's worker.
    assert.deepEqual(items[0]?.capabilities, {
      version: null,
      platforms: await reportedPlatforms(dockerd.address),
      features: ['cache-export:inline'],
    });
    const v024 = items[1]?.capabilities;
    assert.equal(v024?.version, 'v0.24.0');
    // What the daemon itself reports, as buildctl prints it (e.g. linux/amd64, its v2-v4
    // variants the CPU runs, and linux/386 where the kernel runs 32-bit programs).
    const stdout = execFileSync(
      String(process.env.KILN_TEST_BUILDCTL),
      ['--addr', buildkitd.address, 'debug', 'workers', '-v'],
      { encoding: 'utf8' },
    );
    const line = stdout.split('\n').find((l) => l.startsWith('Platforms:')) ?? '';
    assert.deepEqual(v024?.platforms, line.replace('Platforms:', '').trim().split(','));
    assert.equal(v024?.platforms[0], 'linux/amd64');
    for (const f of [
      'exporter:oci',
      'exporter:docker',
      'attestations',
      'source-date-epoch',
      'cache-export:s3',
    ]) {
      assert.ok(v024?.features.includes(f), f);
    }
  });

  test('concurrent tar, oci and docker builds: tar spreads over both, oci and docker run on buildkitd', async () => {
    const tars = await Promise.all(Array.from({ length: 6 }, () => submit('output=type=tar,dest=app.tar')));
    const images = await Promise.all([
      submit('output=type=oci,dest=app.oci.tar'),
      submit('output=type=docker,dest=app.docker.tar,name=kiln/mixed:1'),
    ]);
    const done = await Promise.all([...tars, ...images].map((b) => waitFor(b.id)));
    for (const b of done) assert.equal(b.status, 'succeeded', `${b.id}: ${JSON.stringify(b.error)}`);
    const tarBuilders = done.slice(0, tars.length).map((b) => b.builder);
    assert.deepEqual(new Set(tarBuilders), new Set([dockerd.address, buildkitd.address]), tarBuilders.join());
    assert.deepEqual(
      done.slice(tars.length).map((b) => b.builder),
      [buildkitd.address, buildkitd.address],
    );
    for (const b of done.slice(0, tars.length)) {
      const bytes = Buffer.from(await (await fetch(b.artifact?.url ?? '')).arrayBuffer());
      assert.deepEqual(
        (await readTarEntries(bytes)).map((e) => e.name),
        ['app'],
      );
    }
  });

  test('a platform only buildkitd reports runs on buildkitd; one both report on either', async () => {
    // linux/amd64/v3 and linux/386 where this machine has them (see reportedPlatforms).
    const onDockerd = await reportedPlatforms(dockerd.address);
    const onBuildkitd = await reportedPlatforms(buildkitd.address);
    const onlyBuildkitd = onBuildkitd.filter((p) => !onDockerd.includes(p));
    const only = onlyBuildkitd.includes('linux/amd64/v3') ? 'linux/amd64/v3' : onlyBuildkitd[0];
    const both =
      onDockerd.includes('linux/386') && onBuildkitd.includes('linux/386') ? 'linux/386' : 'linux/amd64';
    assert.ok(only, `buildkitd reports nothing dockerd does not: ${onBuildkitd.join()}`);
    const v3 = await Promise.all(
      Array.from({ length: 3 }, () => submit(`output=type=tar,dest=v3.tar&platform=${only}`)),
    );
    const i386 = await submit(`output=type=tar,dest=386.tar&platform=${both}`);
    const done = await Promise.all([...v3, i386].map((b) => waitFor(b.id)));
    for (const b of done) assert.equal(b.status, 'succeeded', `${b.id}: ${JSON.stringify(b.error)}`);
    assert.deepEqual(
      done.slice(0, 3).map((b) => b.builder),
      [buildkitd.address, buildkitd.address, buildkitd.address],
    );
    assert.ok([dockerd.address, buildkitd.address].includes(done[3]?.builder ?? ''));
  });

  test('a platform no builder reports: 422 no_capable_builder at POST, naming what each lacks', async () => {
    const res = await post(ctx.dir, 'output=type=tar,dest=x.tar&platform=linux/s390x');
    assert.equal(res.status, 422);
    const { error } = (await res.json()) as { error: { code: string; message: string } };
    assert.equal(error.code, 'no_capable_builder');
    assert.match(error.message, /BuildKit < 0\.11\) lacks platform linux\/s390x/);
    assert.match(error.message, /BuildKit v0\.24\.0\) lacks platform linux\/s390x/);

    // Before the body is read: an upload that never ends gets its answer.
    const status = await new Promise<number | undefined>((resolve, reject) => {
      const req = http.request(`${kiln.url}/v1/builds?output=type=tar,dest=x.tar&platform=linux/s390x`, {
        method: 'POST',
        headers: { authorization: `Bearer ${kiln.token}`, 'content-type': 'application/x-tar' },
      });
      req.on('response', (res) => {
        resolve(res.statusCode);
        req.destroy();
      });
      req.on('error', reject);
      req.setTimeout(30_000, () => reject(new Error('no answer within 30 s while the upload was open')));
      req.write(tarHeaderOfBigFile());
      req.write(Buffer.alloc(64 * 1024));
    });
    assert.equal(status, 422);
  });

  test('when the API could not know (nothing published), the worker fails the build at once: no_capable_builder, no attempt', async () => {
    await kiln.redis.del(builderCapabilitiesKey());
    const res = await post(ctx.dir, 'output=type=tar,dest=x.tar&platform=linux/s390x');
    assert.equal(res.status, 202, await res.clone().text());
    const done = await waitFor(((await res.json()) as BuildJson).id);
    assert.equal(done.status, 'failed');
    assert.equal(done.error?.code, 'no_capable_builder');
    assert.match(done.error?.message ?? '', /lacks platform linux\/s390x/);
    assert.equal(done.attempts, 0);
  });
});

describe('a mixed pool whose only capable builder is down', () => {
  let kiln: TestKiln;
  const { post, waitFor } = client(() => kiln);
  const down = 'unix:///tmp/kiln-no-such-buildkitd/buildkitd.sock';

  before(async () => {
    kiln = await startTestKiln({
      worker: true,
      project: 'mixed-down',
      env: { KILN_BUILDERS: `${dockerd.address},${down}`, KILN_BUILD_ATTEMPTS: '1' },
    });
  });
  after(() => kiln?.stop());

  test('an oci build is accepted and waits for a builder as today: no_builder_available, not no_capable_builder', async () => {
    const ctx = await makeContext({ Dockerfile: 'FROM scratch\nCOPY a /a\n', a: 'a' });
    try {
      const res = await post(ctx.dir, 'output=type=oci,dest=i.tar');
      assert.equal(res.status, 202, await res.clone().text());
      const done = await waitFor(((await res.json()) as BuildJson).id);
      assert.equal(done.status, 'failed');
      assert.equal(done.error?.code, 'no_builder_available');
      assert.match(done.error?.message ?? '', /no healthy builder that can serve this build/);
    } finally {
      await ctx.cleanup();
    }
  });
});
