// End to end through HTTP: the API and a worker (in this process) on real PostgreSQL, Redis
// and local storage, once per BuildKit generation (dockerd 20.10's embedded BuildKit 0.8, the
// standalone buildkitd v0.24.0). Tar artifacts are compared with the same build exported by that
// daemon's own CLI (docker build, buildctl).
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import fs from 'node:fs/promises';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { logStreamKey } from '@kiln/core';
import { busyboxPath, makeContext } from '../../packages/buildkit-client/test-support/context.js';
import {
  compareTarEntries,
  readTarEntries,
} from '../../packages/buildkit-client/test-support/tar-entries.js';
import {
  dir as coreDir,
  file as coreFile,
  symlink as coreSymlink,
  tar as coreTar,
} from '../../packages/core/src/context/test-helpers.js';
import { generations } from '../support/generations.js';
import { startTestKiln, type TestKiln, waitForStatus } from '../support/kiln.js';

const RUN = (script: string) => `RUN ["/bin/busybox", "sh", "-c", ${JSON.stringify(script)}]`;
const APP_DOCKERFILE = [
  'FROM scratch AS builder',
  'ARG FLAVOUR=plain',
  'COPY busybox /bin/busybox',
  'COPY src /src',
  RUN(
    'echo compiling-$FLAVOUR; /bin/busybox mkdir -p /out && /bin/busybox cat /src/main.txt > /out/app && echo $FLAVOUR >> /out/app',
  ),
  'FROM scratch',
  'COPY --from=builder /out/app /app',
  '',
].join('\n');

interface BuildJson {
  id: string;
  status: string;
  attempts: number;
  error?: { code: string; message: string };
  artifact?: { url: string; size: number; digest: string; filename: string };
}

for (const generation of generations())
  describe(`Kiln end to end on ${generation.name}`, () => {
    let kiln: TestKiln;
    let dataDir: string;
    let base: string;
    let token: string;
    let busybox: Buffer;

    const api = (p: string, init: RequestInit = {}) => {
      const headers = new Headers(init.headers);
      headers.set('authorization', `Bearer ${token}`);
      return fetch(p.startsWith('http') ? p : `${base}${p}`, { ...init, headers, redirect: 'manual' });
    };
    const tarOf = (dir: string) => execFileSync('tar', ['-C', dir, '-czf', '-', '.']);
    const submit = async (dir: string, query: string): Promise<BuildJson> => {
      const res = await api(`/v1/builds?${query}`, {
        method: 'POST',
        body: tarOf(dir),
        headers: { 'content-type': 'application/gzip' },
      });
      assert.equal(res.status, 202, await res.clone().text());
      return (await res.json()) as BuildJson;
    };
    /** Builds a context tar into a tar artifact and lists the artifact's entries. */
    const builtEntries = async (context: Buffer, query = '') => {
      const res = await api(`/v1/builds?output=type=tar,dest=x.tar${query}`, {
        method: 'POST',
        body: context,
        headers: { 'content-type': 'application/x-tar' },
      });
      assert.equal(res.status, 202, await res.clone().text());
      const done = await waitFor(((await res.json()) as BuildJson).id, ['succeeded', 'failed']);
      assert.equal(done.status, 'succeeded', JSON.stringify(done.error));
      return readTarEntries(Buffer.from(await (await fetch(done.artifact?.url ?? '')).arrayBuffer()));
    };
    const buildCount = async () =>
      ((await (await api('/v1/builds?limit=100')).json()) as { items: unknown[] }).items.length;
    const waitFor = (id: string, statuses: string[], timeoutMs = 90_000) =>
      waitForStatus<BuildJson>(api, id, statuses, timeoutMs);

    before(async () => {
      busybox = await fs.readFile(busyboxPath());
      kiln = await startTestKiln({
        worker: true,
        project: 'e2e',
        env: { KILN_BUILD_ATTEMPTS: '2', KILN_BUILDERS: generation.address },
      });
      ({ url: base, token, dataDir } = kiln);
    });
    after(() => kiln.stop());

    test('POST → queued → running → succeeded; the signed URL gives the bytes docker build --output gives; SSE logs end', async () => {
      const ctx = await makeContext({
        busybox: { content: busybox, mode: 0o755 },
        'src/main.txt': 'hello from kiln\n',
        Dockerfile: APP_DOCKERFILE,
      });
      try {
        const queued = await submit(
          ctx.dir,
          'output=type=tar,dest=myapp.tar&network=none&build-arg=FLAVOUR=spicy',
        );
        assert.equal(queued.status, 'queued');
        // Follow the logs live from the start.
        const sse = await api(`/v1/builds/${queued.id}/logs`, { headers: { accept: 'text/event-stream' } });
        assert.equal(sse.headers.get('content-type'), 'text/event-stream; charset=utf-8');
        const events = await sse.text(); // ends when the build ends
        assert.match(events, /event: log\n(data: .*\n)*data: .*compiling-spicy/);
        assert.match(events, /event: end\ndata: succeeded\n\n$/);

        const done = await waitFor(queued.id, ['succeeded', 'failed']);
        assert.equal(done.status, 'succeeded', JSON.stringify(done.error));
        assert.ok(done.artifact);
        assert.equal(done.artifact.filename, 'myapp.tar');
        const download = await fetch(done.artifact.url);
        assert.equal(download.status, 200);
        assert.match(download.headers.get('content-disposition') ?? '', /myapp\.tar/);
        const ours = Buffer.from(await download.arrayBuffer());
        assert.equal(ours.length, done.artifact.size);

        const expected = path.join(dataDir, 'docker.tar');
        await generation.referenceTar({
          contextDir: ctx.dir,
          buildArgs: { FLAVOUR: 'spicy' },
          dest: expected,
        });
        const diff = compareTarEntries(await readTarEntries(expected), await readTarEntries(ours));
        assert.deepEqual(diff, []);
        const app = (await readTarEntries(ours)).find((e) => e.name === 'app');
        assert.ok(app);

        // The plain log is stored; a ranged download resumes.
        const logs = await (await api(`/v1/builds/${queued.id}/logs`)).text();
        assert.match(logs, /compiling-spicy/);
        // Followed once the live stream has expired (a day after the build), the stored log is
        // sent whole, then the end.
        await kiln.redis.del(logStreamKey(queued.id));
        const later = await (
          await api(`/v1/builds/${queued.id}/logs`, { headers: { accept: 'text/event-stream' } })
        ).text();
        const sent = [...later.matchAll(/event: log\n((?:data: .*\n)+)\n/g)]
          .map((m) => (m[1] ?? '').replace(/^data: /gm, '').replace(/\n$/, ''))
          .join('');
        assert.equal(sent.replace(/[\r\n]/g, ''), logs.replace(/[\r\n]/g, ''));
        assert.match(later, /event: end\ndata: succeeded\n\n$/);
        const ranged = await fetch(done.artifact.url, { headers: { range: 'bytes=0-99' } });
        assert.equal(ranged.status, 206);
        assert.equal((await ranged.arrayBuffer()).byteLength, 100);
        // /artifact redirects to a fresh signed URL.
        const redirect = await api(`/v1/builds/${queued.id}/artifact`);
        assert.equal(redirect.status, 302);
        assert.match(redirect.headers.get('location') ?? '', /\/v1\/files\/artifacts\//);
      } finally {
        await ctx.cleanup();
      }
    });

    if (!generation.imageExporters) {
      test('oci and docker outputs are refused at POST: 422 no_capable_builder, nothing queued', async () => {
        const ctx = await makeContext({ Dockerfile: 'FROM scratch\nCOPY a /a\n', a: 'a' });
        try {
          const before = await buildCount();
          for (const output of ['type=oci,dest=i.tar', 'type=docker,dest=i.tar']) {
            const res = await api(`/v1/builds?output=${output}`, {
              method: 'POST',
              body: tarOf(ctx.dir),
              headers: { 'content-type': 'application/gzip' },
            });
            assert.equal(res.status, 422);
            const { error } = (await res.json()) as { error: { code: string; message: string } };
            assert.equal(error.code, 'no_capable_builder');
            assert.match(error.message, /BuildKit < 0\.11\) lacks feature exporter:(oci|docker)/);
          }
          assert.equal(await buildCount(), before);
        } finally {
          await ctx.cleanup();
        }
      });
    }

    if (generation.imageExporters)
      test('oci and docker outputs: image layouts whose layer holds the app', async () => {
        const ctx = await makeContext({
          busybox: { content: busybox, mode: 0o755 },
          'src/main.txt': 'image\n',
          Dockerfile: APP_DOCKERFILE,
        });
        try {
          const [oci, docker] = await Promise.all([
            submit(ctx.dir, 'output=type=oci,dest=img.oci.tar&network=none'),
            submit(ctx.dir, 'output=type=docker,dest=img.docker.tar,name=kiln/e2e:1&network=none'),
          ]);
          for (const [b, type] of [
            [oci, 'oci'],
            [docker, 'docker'],
          ] as const) {
            const done = await waitFor(b.id, ['succeeded', 'failed']);
            assert.equal(done.status, 'succeeded', JSON.stringify(done.error));
            const dir = path.join(dataDir, `unpacked-${b.id}`);
            await fs.mkdir(dir);
            const artifact = Buffer.from(await (await fetch(done.artifact?.url ?? '')).arrayBuffer());
            execFileSync('tar', ['-C', dir, '-xf', '-'], { input: artifact });
            const json = async (rel: string) => JSON.parse(await fs.readFile(path.join(dir, rel), 'utf8'));
            const blob = (digest: string) => path.join('blobs', ...digest.split(':'));
            const layers: string[] =
              type === 'oci'
                ? (await json(blob((await json('index.json')).manifests[0].digest))).layers.map(
                    (l: { digest: string }) => blob(l.digest),
                  )
                : (await json('manifest.json'))[0].Layers;
            if (type === 'docker')
              assert.deepEqual((await json('manifest.json'))[0].RepoTags, ['kiln/e2e:1']);
            assert.equal(layers.length, 1);
            const files = execFileSync('tar', ['-tzf', path.join(dir, layers[0] ?? '')], {
              encoding: 'utf8',
            });
            assert.deepEqual(files.trim().split('\n'), ['app']);
          }
        } finally {
          await ctx.cleanup();
        }
      });

    test('target stage', async () => {
      const ctx = await makeContext({
        busybox: { content: busybox, mode: 0o755 },
        'src/main.txt': 'x\n',
        Dockerfile: APP_DOCKERFILE,
      });
      try {
        const b = await submit(ctx.dir, 'output=type=tar,dest=b.tar&network=none&target=builder');
        const done = await waitFor(b.id, ['succeeded', 'failed']);
        assert.equal(done.status, 'succeeded', JSON.stringify(done.error));
        const names = (
          await readTarEntries(Buffer.from(await (await fetch(done.artifact?.url ?? '')).arrayBuffer()))
        ).map((e) => e.name);
        assert.ok(names.includes('bin/busybox') && names.includes('out/app'), names.join(','));
      } finally {
        await ctx.cleanup();
      }
    });

    test('extended attributes: the context tar gives those docker build gives from disk; never through a symlink, none of the host namespaces', async () => {
      const ctx = await makeContext({
        Dockerfile: 'FROM scratch\nCOPY . /ctx/\n',
        tool: { content: 'tool', mode: 0o755 },
        'data/plain.txt': 'plain',
      });
      const hostFile = path.join(dataDir, 'xattr-target');
      try {
        execFileSync('setfattr', ['-n', 'user.kiln.origin', '-v', 'ctx', path.join(ctx.dir, 'tool')]);
        execFileSync('setfattr', ['-n', 'user.kiln.dir', '-v', 'd', path.join(ctx.dir, 'data')]);
        const ours = await builtEntries(execFileSync('tar', ['-C', ctx.dir, '--xattrs', '-cf', '-', '.']));
        const expected = path.join(dataDir, 'xattrs-reference.tar');
        await generation.referenceTar({ contextDir: ctx.dir, dest: expected });
        assert.deepEqual(compareTarEntries(await readTarEntries(expected), ours), []);
        assert.deepEqual(ours.find((e) => e.name === 'ctx/tool')?.xattrs, ['user.kiln.origin=ctx']);
        assert.deepEqual(ours.find((e) => e.name === 'ctx/data')?.xattrs, ['user.kiln.dir=d']);

        // A tar no directory could give: attributes on a symlink to a file of the builder's host,
        // and in namespaces of the host's.
        await fs.writeFile(hostFile, 'the host file');
        // The host's file system takes user attributes, or the check below could not fail.
        execFileSync('setfattr', ['-n', 'user.kiln.probe', '-v', '1', hostFile]);
        execFileSync('setfattr', ['-x', 'user.kiln.probe', hostFile]);
        const pax = (name: string) => ({ [`SCHILY.xattr.${name}`]: '1' });
        const entries = await builtEntries(
          coreTar([
            coreFile('Dockerfile', 'FROM scratch\nCOPY . /ctx/\n'),
            coreSymlink('link', hostFile, { pax: pax('user.kiln.pwned') }),
            coreFile('f', 'f', {
              pax: { ...pax('user.kiln.ok'), ...pax('trusted.overlay.opaque'), ...pax('security.selinux') },
            }),
          ]),
        );
        assert.deepEqual(entries.find((e) => e.name === 'ctx/f')?.xattrs, ['user.kiln.ok=1']);
        assert.deepEqual(entries.find((e) => e.name === 'ctx/link')?.xattrs, []);

        // The same file (size, mtime, mode) with another value: BuildKit's copy of the project's
        // last context must not keep the old one.
        for (const value of ['one', 'two']) {
          const again = await builtEntries(
            coreTar([
              coreFile('Dockerfile', 'FROM scratch\nCOPY . /ctx/\n'),
              coreFile('f', 'f', { pax: { 'SCHILY.xattr.user.kiln.v': value } }),
            ]),
          );
          assert.deepEqual(again.find((e) => e.name === 'ctx/f')?.xattrs, [`user.kiln.v=${value}`]);
        }
        assert.equal(
          execFileSync('getfattr', ['--absolute-names', '-d', '-m', '-', hostFile], { encoding: 'utf8' }),
          '',
        );
      } finally {
        await ctx.cleanup();
        await fs.rm(hostFile, { force: true });
      }
    });

    test('a file changed in place between two builds is built changed, even with the same size and mtime (reproducible tars)', async () => {
      // `tar --mtime=@0`, Bazel's pkg_tar, SOURCE_DATE_EPOCH: every build of the project has the
      // same mtimes. BuildKit's receiver takes an unchanged size, mtime and mode for an unchanged
      // file and keeps what the project's last context sent.
      for (const content of ['aaaa', 'bbbb']) {
        const entries = await builtEntries(
          coreTar([
            coreFile('Dockerfile', 'FROM scratch\nCOPY f /f\n', { mtime: 0 }),
            coreFile('f', content, { mtime: 0 }),
          ]),
        );
        const f = entries.find((e) => e.name === 'f');
        assert.equal(
          f?.sha256,
          createHash('sha256').update(content).digest('hex'),
          `the build of ${content}`,
        );
      }
      // One tar, two Dockerfiles of the same size and mtime, each alone in its directory.
      const both = coreTar([
        coreFile('a/Dockerfile', 'FROM scratch\nCOPY f /a\n', { mtime: 0 }),
        coreFile('b/Dockerfile', 'FROM scratch\nCOPY f /b\n', { mtime: 0 }),
        coreFile('f', 'f', { mtime: 0 }),
      ]);
      for (const dir of ['a', 'b']) {
        const entries = await builtEntries(both, `&file=${dir}/Dockerfile`);
        assert.deepEqual(
          entries.map((e) => e.name),
          [dir],
        );
      }
    });

    test('files and directories their owner may not read are built whole, with their own modes', async () => {
      // The worker extracts as whatever user it runs as (the image's `node`); such a file used to
      // go to BuildKit as an empty one.
      const entries = await builtEntries(
        coreTar([
          coreFile('Dockerfile', 'FROM scratch\nCOPY . /ctx/\n'),
          coreFile('none', 'secret data', { mode: 0o000 }),
          coreFile('write-only', 'w', { mode: 0o222 }),
          coreDir('closed', { mode: 0o000 }),
          coreFile('closed/inside', 'i', { mode: 0o640 }),
          coreDir('readonly', { mode: 0o555 }),
        ]),
      );
      const sha = (text: string) => createHash('sha256').update(text).digest('hex');
      const seen = (name: string) => {
        const e = entries.find((x) => x.name === `ctx/${name}`);
        return e && [e.mode.toString(8), e.type === 'file' ? e.sha256 : e.type];
      };
      assert.deepEqual(seen('none'), ['0', sha('secret data')]);
      assert.deepEqual(seen('write-only'), ['222', sha('w')]);
      assert.deepEqual(seen('closed'), ['0', 'dir']);
      assert.deepEqual(seen('closed/inside'), ['640', sha('i')]);
      assert.deepEqual(seen('readonly'), ['555', 'dir']);
    });

    test('a Dockerfile error ends failed with the line, without retries', async () => {
      const ctx = await makeContext({
        Dockerfile: 'FROM scratch\nCOPY a /a\nNOT_AN_INSTRUCTION x\n',
        a: 'a',
      });
      try {
        const b = await submit(ctx.dir, 'output=type=tar,dest=x.tar');
        const done = await waitFor(b.id, ['succeeded', 'failed']);
        assert.equal(done.status, 'failed');
        assert.equal(done.error?.code, 'build_failed');
        assert.match(done.error?.message ?? '', /line 3/);
        assert.equal(done.attempts, 1);
        assert.equal((await api(`/v1/builds/${b.id}/artifact`)).status, 409);
      } finally {
        await ctx.cleanup();
      }
    });

    if (generation.address.startsWith('docker://'))
      test('a RUN on the default network of a dockerd without a bridge: failed, saying to build with network=none', async () => {
        const ctx = await makeContext({
          busybox: { content: busybox, mode: 0o755 },
          Dockerfile: 'FROM scratch\nCOPY busybox /bin/busybox\nRUN ["/bin/busybox", "true"]\n',
        });
        try {
          const b = await submit(ctx.dir, 'output=type=tar,dest=x.tar&noCache=true');
          const done = await waitFor(b.id, ['succeeded', 'failed']);
          assert.equal(done.error?.code, 'build_failed');
          assert.match(
            done.error?.message ?? '',
            /network bridge not found \(this builder has no bridge network: build with network=none/,
          );
        } finally {
          await ctx.cleanup();
        }
      });

    test('cancel a running sleep build: canceled, and the RUN is gone from the host', async () => {
      const ctx = await makeContext({
        busybox: { content: busybox, mode: 0o755 },
        Dockerfile: `FROM scratch\nCOPY busybox /bin/busybox\n${RUN('sleep 419')}\n`,
      });
      try {
        const b = await submit(ctx.dir, 'output=type=tar,dest=s.tar&network=none&noCache=true');
        await waitFor(b.id, ['running']);
        const running = async () =>
          execFileSync('ps', ['-eo', 'args'], { encoding: 'utf8' }).includes('sleep 419');
        for (let i = 0; i < 100 && !(await running()); i++) await new Promise((r) => setTimeout(r, 100));
        assert.ok(await running(), 'the RUN step started');
        const res = await api(`/v1/builds/${b.id}/cancel`, { method: 'POST' });
        assert.equal(res.status, 202);
        const done = await waitFor(b.id, ['canceled', 'failed', 'succeeded'], 30_000);
        assert.equal(done.status, 'canceled');
        let alive = true;
        for (let i = 0; i < 50 && alive; i++) {
          alive = await running();
          if (alive) await new Promise((r) => setTimeout(r, 200));
        }
        assert.equal(alive, false);
      } finally {
        await ctx.cleanup();
      }
    });

    test('signed URLs: tampered → 403, expired → 403', async () => {
      const ctx = await makeContext({ Dockerfile: 'FROM scratch\nCOPY a /a\n', a: 'a' });
      try {
        const b = await submit(ctx.dir, 'output=type=tar,dest=t.tar');
        const done = await waitFor(b.id, ['succeeded', 'failed']);
        const url = new URL(done.artifact?.url ?? '');
        const tamper = (k: string, v: string) => {
          const u = new URL(url);
          u.searchParams.set(k, v);
          return u.toString();
        };
        for (const bad of [
          tamper('expires', String(Number(url.searchParams.get('expires')) + 1000)),
          tamper('filename', 'evil.tar'),
          tamper('sig', '0'.repeat(64)),
          url.toString().replace('/artifacts/', '/contexts/'),
          tamper('expires', '1000000000'),
        ]) {
          const res = await fetch(bad);
          assert.equal(res.status, 403, bad);
          assert.equal(((await res.json()) as { error: { code: string } }).error.code, 'forbidden');
        }
        assert.equal((await fetch(url)).status, 200);
      } finally {
        await ctx.cleanup();
      }
    });
  });
