// The real `kiln` command (node apps/cli/bin/kiln.js, a child process) against a real Kiln:
// the API and a worker in this process on PostgreSQL, Redis and a private dockerd. Every
// artifact is compared with what `docker build --output type=tar` makes of the same context.
import assert from 'node:assert/strict';
import { execFileSync, spawn } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { access, mkdtemp, readFile, rm, stat } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import {
  busyboxPath,
  makeContext,
  SPECIAL_FILES,
} from '../../../packages/buildkit-client/test-support/context.js';
import { dockerBuildTar } from '../../../packages/buildkit-client/test-support/docker.js';
import {
  compareTarEntries,
  readTarEntries,
} from '../../../packages/buildkit-client/test-support/tar-entries.js';
import { dockerSocket, OPERATOR_TOKEN, type RunningKiln, startKiln } from './kiln-service.js';

const KILN_BIN = fileURLToPath(new URL('../bin/kiln.js', import.meta.url));
const RUN = (script: string) => `RUN ["/bin/busybox", "sh", "-c", ${JSON.stringify(script)}]`;
const APP_DOCKERFILE = [
  'FROM scratch AS builder',
  'ARG FLAVOUR=plain',
  'COPY busybox /bin/busybox',
  'COPY . /ctx',
  RUN(
    'echo compiling-$FLAVOUR; /bin/busybox mkdir -p /out && /bin/busybox cat /ctx/src/main.txt > /out/app && echo $FLAVOUR >> /out/app',
  ),
  'FROM scratch',
  'COPY --from=builder /out/app /app',
  'COPY --from=builder /ctx /ctx',
  '',
].join('\n');

interface Result {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: Buffer;
  stderr: string;
}

interface BuildJson {
  id: string;
  status: string;
  error?: { code: string; message: string };
  artifact?: { digest: string; size: number };
}

describe('kiln CLI against a real Kiln', () => {
  let kiln: RunningKiln;
  let home = '';
  let busybox: Buffer;
  const socket = dockerSocket();

  /** The CLI's environment: what login saved and `extra` (no KILN_* tokens from the caller). */
  const cliEnv = (extra: Record<string, string> = {}) => {
    const env: NodeJS.ProcessEnv = { ...process.env, HOME: home };
    delete env.KILN_URL;
    delete env.KILN_TOKEN;
    delete env.KILN_OPERATOR_TOKEN;
    delete env.XDG_CONFIG_HOME;
    delete env.XDG_CACHE_HOME;
    return { ...env, ...extra };
  };

  const start = (args: string[], opts: { cwd?: string; env?: Record<string, string> } = {}) => {
    const child = spawn(process.execPath, [KILN_BIN, ...args], {
      cwd: opts.cwd ?? home,
      env: cliEnv(opts.env),
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    const stdout: Buffer[] = [];
    let stderr = '';
    /** When each stderr chunk came, and how long stderr was then. */
    const arrivals: Array<{ at: number; length: number }> = [];
    child.stdout.on('data', (c: Buffer) => stdout.push(c));
    child.stderr.on('data', (c: Buffer) => {
      stderr += c.toString();
      arrivals.push({ at: Date.now(), length: stderr.length });
    });
    const done = new Promise<Result>((resolve, reject) => {
      child.on('error', reject);
      child.on('close', (code, signal) => resolve({ code, signal, stdout: Buffer.concat(stdout), stderr }));
    });
    /** The time the stderr chunk completing the first match of `re` arrived. */
    const stderrAt = (re: RegExp) => arrivals.find((a) => re.test(stderr.slice(0, a.length)))?.at;
    return { child, done, stderr: () => stderr, stderrAt };
  };
  const kilnCli = (args: string[], opts: { cwd?: string; env?: Record<string, string> } = {}) =>
    start(args, opts).done;

  const api = async (p: string, init: RequestInit = {}) => {
    const headers = new Headers(init.headers);
    headers.set('authorization', `Bearer ${kiln.token}`);
    return fetch(`${kiln.url}${p}`, { ...init, headers });
  };
  const getBuild = async (id: string) => (await (await api(`/v1/builds/${id}`)).json()) as BuildJson;
  const waitFor = async (check: () => Promise<boolean>, what: string, timeoutMs = 60_000) => {
    const end = Date.now() + timeoutMs;
    while (!(await check())) {
      if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
      await new Promise((r) => setTimeout(r, 100));
    }
  };
  const buildIdFrom = (stderr: string) => {
    const id = stderr.match(/kiln: build ([0-9A-Z]+) queued/)?.[1];
    assert.ok(id, stderr);
    return id;
  };
  const sha256 = (b: Buffer) => `sha256:${createHash('sha256').update(b).digest('hex')}`;

  before(async () => {
    await access(path.join(path.dirname(KILN_BIN), '../dist/main.js')).catch(() => {
      throw new Error('apps/cli/dist is missing: run `npm run build` first (npm test does)');
    });
    busybox = await readFile(busyboxPath());
    kiln = await startKiln();
    home = await mkdtemp(path.join(os.tmpdir(), 'kiln-cli-home-'));
    const login = await kilnCli(['login', '--url', kiln.url, '--token', kiln.token]);
    assert.equal(login.code, 0, login.stderr);
    assert.equal((await stat(path.join(home, '.config/kiln/config.json'))).mode & 0o777, 0o600);
  });
  after(async () => {
    await kiln?.stop();
    if (home) await rm(home, { recursive: true, force: true });
  });

  let succeededId = '';
  let failedId = '';
  let downloaded: Buffer;

  test('build --network none --build-arg: the tar equals docker build --output; .dockerignore honoured', async () => {
    const ctx = await makeContext({
      busybox: { content: busybox, mode: 0o755 },
      'src/main.txt': 'hello from kiln\n',
      'src/tool.sh': { content: '#!/bin/sh\n', mode: 0o755 },
      'src/link': { symlink: 'main.txt' },
      'secret.txt': 'do not send me',
      'logs/debug.log': 'noise',
      '.dockerignore': 'secret.txt\nlogs\n',
      Dockerfile: APP_DOCKERFILE,
    });
    try {
      // The reference first: our output lands in the context directory.
      const reference = path.join(home, 'docker-app.tar');
      await dockerBuildTar({ socket, contextDir: ctx.dir, buildArgs: { FLAVOUR: 'spicy' }, dest: reference });
      const r = await kilnCli(
        [
          'build',
          '--network',
          'none',
          '--build-arg',
          'FLAVOUR=spicy',
          '--progress',
          'plain',
          '-o',
          'type=tar,dest=out/app.tar',
          '.',
        ],
        { cwd: ctx.dir },
      );
      assert.equal(r.code, 0, r.stderr);
      // busybox, src/main.txt, src/tool.sh, .dockerignore, Dockerfile: not secret.txt, not logs/.
      assert.match(r.stderr, /kiln: sent the build context: 5 files, /);
      assert.match(r.stderr, /compiling-spicy/);
      assert.match(r.stderr, /kiln: build [0-9A-Z]+ succeeded/);
      assert.match(r.stderr, /kiln: wrote out\/app\.tar \(/);
      succeededId = buildIdFrom(r.stderr);
      downloaded = await readFile(path.join(ctx.dir, 'out/app.tar'));
      const ours = await readTarEntries(downloaded);
      assert.deepEqual(compareTarEntries(await readTarEntries(reference), ours), []);
      const names = ours.map((e) => e.name);
      assert.ok(names.includes('ctx/src/main.txt') && names.includes('ctx/src/link'), names.join(' '));
      assert.ok(
        !names.includes('ctx/secret.txt') && !names.some((n) => n.startsWith('ctx/logs')),
        names.join(' '),
      );
      const app = ours.find((e) => e.name === 'app');
      assert.equal(app?.sha256, createHash('sha256').update('hello from kiln\nspicy\n').digest('hex'));
      // The download is what the build recorded.
      assert.equal((await getBuild(succeededId)).artifact?.digest, sha256(downloaded));
    } finally {
      await ctx.cleanup();
    }
  });

  test('--target, -f in a subdirectory with its own <Dockerfile>.dockerignore: same as docker build', async () => {
    const ctx = await makeContext({
      busybox: { content: busybox, mode: 0o755 },
      'src/main.txt': 'target\n',
      'docs/readme.md': 'docs',
      'notes.txt': 'excluded by .dockerignore only',
      '.dockerignore': 'notes.txt\n',
      'build/app.Dockerfile': APP_DOCKERFILE,
      'build/app.Dockerfile.dockerignore': 'docs\n',
    });
    try {
      const reference = path.join(home, 'docker-target.tar');
      await dockerBuildTar({
        socket,
        contextDir: ctx.dir,
        dockerfile: 'build/app.Dockerfile',
        target: 'builder',
        dest: reference,
      });
      const r = await kilnCli(
        [
          'build',
          '-f',
          'build/app.Dockerfile',
          '--target',
          'builder',
          '--network=none',
          '-o',
          'type=tar,dest=t.tar',
          '--progress=plain',
          '.',
        ],
        { cwd: ctx.dir },
      );
      assert.equal(r.code, 0, r.stderr);
      const ours = await readTarEntries(path.join(ctx.dir, 't.tar'));
      assert.deepEqual(compareTarEntries(await readTarEntries(reference), ours), []);
      const names = ours.map((e) => e.name);
      assert.ok(names.includes('bin/busybox') && names.includes('out/app'), names.join(' '));
      // BuildKit used the Dockerfile's own ignore file: docs gone, notes.txt (only in .dockerignore) kept.
      assert.ok(
        !names.some((n) => n.startsWith('ctx/docs')) && names.includes('ctx/notes.txt'),
        names.join(' '),
      );
    } finally {
      await ctx.cleanup();
    }
  });

  test('--secret src=FILE, env=VAR and a bare id reach RUN --mount=type=secret; values appear nowhere in the output', async () => {
    const script = '/bin/busybox cat /run/secrets/f /run/secrets/e /run/secrets/KILN_CLI_BARE > /out';
    const ctx = await makeContext({
      busybox: { content: busybox, mode: 0o755 },
      Dockerfile: `FROM scratch\nCOPY busybox /bin/busybox\nRUN --mount=type=secret,id=f --mount=type=secret,id=e --mount=type=secret,id=KILN_CLI_BARE ${JSON.stringify(['/bin/busybox', 'sh', '-c', script])}\n`,
      'secret-file': Buffer.from([0xff, 0xfe, 0x00, 0x2a]), // not UTF-8: sent as base64
    });
    const fromEnv = `env-${Date.now()}-cli-secret`;
    try {
      const r = await kilnCli(
        [
          'build',
          '--network',
          'none',
          '--no-cache',
          '--progress',
          'plain',
          '--secret',
          'id=f,src=secret-file',
          '--secret',
          'id=e,env=KILN_CLI_SECRET',
          '--secret',
          'id=KILN_CLI_BARE',
          '-o',
          'type=tar,dest=out.tar',
          '.',
        ],
        { cwd: ctx.dir, env: { KILN_CLI_SECRET: fromEnv, KILN_CLI_BARE: '!bare' } },
      );
      assert.equal(r.code, 0, r.stderr);
      const out = (await readTarEntries(await readFile(path.join(ctx.dir, 'out.tar')))).find(
        (e) => e.name === 'out',
      );
      const expected = Buffer.concat([Buffer.from([0xff, 0xfe, 0x00, 0x2a]), Buffer.from(`${fromEnv}!bare`)]);
      assert.equal(out?.sha256, createHash('sha256').update(expected).digest('hex'));
      assert.ok(!r.stderr.includes(fromEnv), r.stderr);
      const id = buildIdFrom(r.stderr);
      const logs = await (await api(`/v1/builds/${id}/logs`)).text();
      assert.ok(!logs.includes(fromEnv) && !JSON.stringify(await getBuild(id)).includes(fromEnv));

      const missing = await kilnCli(
        ['build', '--secret', 'id=x,src=nope.txt', '-o', 'type=tar,dest=o.tar', '.'],
        {
          cwd: ctx.dir,
        },
      );
      assert.equal(missing.code, 1);
      assert.match(missing.stderr, /secret x: cannot read .*nope\.txt: ENOENT/);
    } finally {
      await ctx.cleanup();
    }
  });

  test('a socket, a fifo and a device node: kiln build gives what docker build gives but the device; the API refuses a tar carrying them', async () => {
    const ctx = await makeContext(SPECIAL_FILES);
    try {
      const reference = path.join(home, 'docker-special.tar');
      const ours = path.join(home, 'kiln-special.tar');
      await dockerBuildTar({ socket, contextDir: ctx.dir, dest: reference });
      const r = await kilnCli(['build', '--network', 'none', '-o', `type=tar,dest=${ours}`, '.'], {
        cwd: ctx.dir,
      });
      assert.equal(r.code, 0, r.stderr);
      assert.match(r.stderr, /socket\.sock: cannot be opened \(ENXIO\), sent as an empty file/);
      assert.match(r.stderr, /run\/fifo: Kiln does not take devices and FIFOs in a build context, left out/);
      assert.match(
        r.stderr,
        /dev\/null-dev: Kiln does not take devices and FIFOs in a build context, left out/,
      );
      // docker's BuildKit 0.8 also drops the fifo and makes the socket an empty 0600 file; it
      // keeps the device node, which Kiln's worker (extracting as root) never creates.
      assert.deepEqual(compareTarEntries(await readTarEntries(reference), await readTarEntries(ours)), [
        'ctx/dev/null-dev: only in a',
      ]);

      // The same directory tarred by GNU tar (which skips the socket) is a 4xx naming the entry.
      const tarred = execFileSync('tar', ['-C', ctx.dir, '-cf', '-', '--sort=name', '.']);
      const res = await api('/v1/builds', {
        method: 'POST',
        headers: { 'content-type': 'application/x-tar' },
        body: tarred,
      });
      assert.equal(res.status, 400);
      const body = (await res.json()) as { error: { code: string; message: string } };
      assert.equal(body.error.code, 'invalid_context');
      assert.match(body.error.message, /dev\/null-dev" is a character device/);
    } finally {
      await ctx.cleanup();
    }
  });

  test('a Dockerfile error exits 1 with the line; no file is written', async () => {
    const ctx = await makeContext({ Dockerfile: 'FROM scratch\nCOPY a /a\nNOT_AN_INSTRUCTION x\n', a: 'a' });
    try {
      const r = await kilnCli(['build', '-o', 'type=tar,dest=x.tar', '--progress', 'plain', '.'], {
        cwd: ctx.dir,
      });
      assert.equal(r.code, 1, r.stderr);
      assert.match(r.stderr, /\nerror: .*line 3.*NOT_AN_INSTRUCTION.* \(build_failed\)\n$/i);
      await assert.rejects(access(path.join(ctx.dir, 'x.tar')));
      failedId = buildIdFrom(r.stderr);
      assert.equal((await getBuild(failedId)).status, 'failed');
    } finally {
      await ctx.cleanup();
    }
  });

  test('--progress json: one JSON object per line; -o - streams the tar to stdout', async () => {
    const ctx = await makeContext({ Dockerfile: 'FROM scratch\nCOPY a /a\n', a: 'json' });
    try {
      const r = await kilnCli(['build', '--progress', 'json', '-o', '-', '.'], { cwd: ctx.dir });
      assert.equal(r.code, 0, r.stderr);
      const events = r.stderr
        .trim()
        .split('\n')
        .map((l) => JSON.parse(l) as { type: string; status?: string; digest?: string });
      const types = new Set(events.map((e) => e.type));
      for (const t of ['context', 'upload', 'build', 'log', 'status', 'artifact']) assert.ok(types.has(t), t);
      assert.equal(events.find((e) => e.type === 'status')?.status, 'succeeded');
      assert.equal(events.find((e) => e.type === 'artifact')?.digest, sha256(r.stdout));
      const entries = await readTarEntries(r.stdout);
      assert.deepEqual(
        entries.map((e) => [e.name, e.sha256]),
        [['a', createHash('sha256').update('json').digest('hex')]],
      );
    } finally {
      await ctx.cleanup();
    }
  });

  test("a context gzip shrinks beyond the server's ratio limit is sent again uncompressed", async () => {
    const ctx = await makeContext({
      Dockerfile: 'FROM scratch\nCOPY zeros /zeros\n',
      zeros: Buffer.alloc(8 << 20),
    });
    try {
      const r = await kilnCli(['build', '--progress', 'plain', '-o', 'type=tar,dest=z.tar', '.'], {
        cwd: ctx.dir,
      });
      assert.equal(r.code, 0, r.stderr);
      assert.match(
        r.stderr,
        /^warning: the context compresses better than the server accepts from gzip: sending it uncompressed\n/,
      );
      assert.match(r.stderr, /kiln: sent the build context: 2 files, 8\.39MB \(uncompressed\)/);
      const [zeros] = await readTarEntries(path.join(ctx.dir, 'z.tar'));
      assert.equal(zeros?.size, 8 << 20);
    } finally {
      await ctx.cleanup();
    }
  });

  test('an unchanged context is built by digest, not sent again; another project cannot use it', async () => {
    const ctx = await makeContext({
      Dockerfile: 'FROM scratch\nCOPY big /big\n',
      big: randomBytes(100 << 20),
    });
    // The result goes outside the context: written inside, it would change the context.
    const dest = path.join(home, 'unchanged.tar');
    const out = ['build', '--progress', 'plain', '-o', `type=tar,dest=${dest}`, '.'];
    try {
      const first = await kilnCli(out, { cwd: ctx.dir });
      assert.equal(first.code, 0, first.stderr);
      assert.match(first.stderr, /kiln: sent the build context: 2 files, 105MB/);
      const firstTar = await readFile(dest);

      const started = Date.now();
      // --no-cache: a real build, not one answered from the result cache.
      const second = start([...out.slice(0, -1), '--no-cache', '.'], { cwd: ctx.dir });
      const r = await second.done;
      // Timed at the arrival of the line, not by polling for it.
      const beforeBuild = (second.stderrAt(/kiln: build [0-9A-Z]+ queued/) ?? Number.NaN) - started;
      assert.ok(beforeBuild > 0, r.stderr);
      assert.equal(r.code, 0, r.stderr);
      const digest = r.stderr.match(
        /unchanged \(2 files, [\d.]+MB, (sha256:[0-9a-f]{64})\): not sent again/,
      )?.[1];
      assert.ok(digest, r.stderr);
      assert.ok((await readFile(dest)).equals(firstTar));
      console.log(
        `  unchanged 100 MiB context: ${beforeBuild} ms from starting kiln build to the build queued`,
      );

      // Another project: the digest is unknown to it, exactly like one nobody uploaded.
      const otherToken = await kiln.newToken('other-cli');
      const byDigest = (d: string) =>
        fetch(`${kiln.url}/v1/builds`, {
          method: 'POST',
          headers: { authorization: `Bearer ${otherToken}`, 'content-type': 'application/json' },
          body: JSON.stringify({ context: d, output: 'type=tar,dest=a.tar' }),
        });
      const theirs = await byDigest(digest);
      const nobodys = await byDigest(`sha256:${'0'.repeat(64)}`);
      assert.equal(theirs.status, 404);
      assert.equal(nobodys.status, 404);
      const message = async (res: Response) =>
        ((await res.json()) as { error: { message: string } }).error.message.replace(/sha256:[0-9a-f]+/, 'D');
      assert.equal(await message(theirs), await message(nobodys));
      // Its CLI (same cache file, same fingerprint) asks, gets the 404 and uploads.
      const other = await kilnCli(out, { cwd: ctx.dir, env: { KILN_TOKEN: otherToken } });
      assert.equal(other.code, 0, other.stderr);
      assert.match(other.stderr, /kiln: sent the build context/);
    } finally {
      await ctx.cleanup();
    }
  });

  test('a build arg too long for a URL (16 KB) is sent in the body and reaches the build', async () => {
    const ctx = await makeContext({ Dockerfile: 'FROM scratch\nARG CA\nLABEL ca=$CA\nCOPY a /a\n', a: 'a' });
    const value = 'A'.repeat(16_000);
    try {
      const r = await kilnCli(
        [
          'build',
          '--progress',
          'plain',
          '--build-arg',
          `CA=${value}`,
          '-o',
          `type=tar,dest=${path.join(home, 'ca.tar')}`,
          '.',
        ],
        { cwd: ctx.dir },
      );
      assert.equal(r.code, 0, r.stderr.slice(-2000));
      const id = /kiln: build ([0-9A-Z]+) queued/.exec(r.stderr)?.[1];
      const view = (await (
        await fetch(`${kiln.url}/v1/builds/${id}`, { headers: { authorization: `Bearer ${kiln.token}` } })
      ).json()) as { spec: { buildArgs: Record<string, string> } };
      assert.equal(view.spec.buildArgs.CA, value);
    } finally {
      await ctx.cleanup();
    }
  });

  test('builds ls / show / logs', async () => {
    const ls = await kilnCli(['builds', 'ls']);
    assert.equal(ls.code, 0, ls.stderr);
    const lines = ls.stdout.toString().trim().split('\n');
    assert.match(lines[0] ?? '', /^BUILD ID +STATUS +CREATED +DURATION +OUTPUT +SIZE$/);
    assert.ok(lines.some((l) => l.startsWith(succeededId) && /succeeded/.test(l) && /tar:app\.tar/.test(l)));

    const failed = await kilnCli(['builds', 'ls', '--status', 'failed', '-q']);
    assert.deepEqual(failed.stdout.toString().trim().split('\n'), [failedId]);

    const show = await kilnCli(['builds', 'show', succeededId]);
    assert.equal(show.code, 0, show.stderr);
    const text = show.stdout.toString();
    assert.match(text, /^ID: +[0-9A-Z]+\nStatus: +succeeded\n/);
    assert.match(text, new RegExp(`Digest: +${sha256(downloaded)}\n`));
    assert.match(text, /Build arg: +FLAVOUR=spicy\n/);
    assert.match(text, /Download: +http:\/\/127\.0\.0\.1:\d+\/v1\/files\/artifacts\//);
    const json = JSON.parse(
      (await kilnCli(['builds', 'show', '--json', failedId])).stdout.toString(),
    ) as BuildJson;
    assert.equal(json.error?.code, 'build_failed');

    const logs = await kilnCli(['builds', 'logs', succeededId]);
    assert.equal(logs.code, 0, logs.stderr);
    assert.match(logs.stdout.toString(), /compiling-spicy/);
    // -f on a finished build prints the whole log and returns.
    assert.match((await kilnCli(['builds', 'logs', '-f', succeededId])).stdout.toString(), /compiling-spicy/);

    const missing = await kilnCli(['builds', 'show', 'NOSUCHBUILD']);
    assert.equal(missing.code, 1);
    assert.equal(missing.stderr, 'error: no build NOSUCHBUILD (not_found)\n');
    const done = await kilnCli(['builds', 'cancel', succeededId]);
    assert.equal(done.code, 1);
    assert.match(done.stderr, /^error: build [0-9A-Z]+ is already succeeded \(conflict\)\n$/);
  });

  test('projects (operator token) and tokens: a build-scoped token builds but cannot make tokens; disable and enable', async () => {
    const operator = { KILN_OPERATOR_TOKEN: OPERATOR_TOKEN };
    const created = await kilnCli(['projects', 'create', 'web-ci', '--max-queued', '5'], { env: operator });
    assert.equal(created.code, 0, created.stderr);
    const shown = created.stdout.toString();
    assert.match(shown, /^ID: +\S+\nName: +web-ci\nStatus: +active\n/);
    assert.match(shown, /\nMax queued builds: +5\nMax running builds: +\d+ \(default\)\n/);
    const again = await kilnCli(['projects', 'create', 'web-ci'], { env: operator });
    assert.equal(again.code, 1);
    assert.equal(again.stderr, 'error: a project web-ci exists (conflict)\n');

    // The project token never stands in for the operator's; a wrong one is refused with a hint.
    const missing = await kilnCli(['projects', 'ls']);
    assert.equal(missing.code, 2);
    assert.match(missing.stderr, /^error: the operator token is required/);
    const wrong = await kilnCli(['projects', 'ls', '--operator-token', kiln.token]);
    assert.equal(wrong.code, 4);
    assert.match(wrong.stderr, /\(unauthorized\)\nhint: pass --operator-token, or set KILN_OPERATOR_TOKEN/);

    const issued = await kilnCli([
      'projects',
      'token',
      'web-ci',
      'ci',
      '--scope',
      'build',
      '--operator-token',
      OPERATOR_TOKEN,
    ]);
    assert.equal(issued.code, 0, issued.stderr);
    const buildToken = issued.stdout.toString().trim();
    assert.match(issued.stdout.toString(), /^kiln_\S+\n$/);
    assert.match(
      issued.stderr,
      /^Token \S+ "ci" \(scope build\) created\. Save it now: it will not be shown again\.\n$/,
    );
    const asCi = { KILN_TOKEN: buildToken };

    const ctx = await makeContext({
      'a.txt': 'from web-ci\n',
      Dockerfile: 'FROM scratch\nCOPY a.txt /a.txt\n',
    });
    try {
      const built = await kilnCli(['build', '--progress', 'quiet', '-o', 'type=tar,dest=ci.tar', '.'], {
        cwd: ctx.dir,
        env: asCi,
      });
      assert.equal(built.code, 0, built.stderr);
      const entries = await readTarEntries(path.join(ctx.dir, 'ci.tar'));
      assert.ok(
        entries.some((e) => e.name === 'a.txt'),
        JSON.stringify(entries.map((e) => e.name)),
      );
    } finally {
      await ctx.cleanup();
    }
    const denied = await kilnCli(['tokens', 'create', 'more', '--scope', 'build'], { env: asCi });
    assert.equal(denied.code, 4);
    assert.equal(
      denied.stderr,
      'error: this needs a token of scope "manage"; this one is "build" (forbidden)\n',
    );
    assert.equal(denied.stdout.toString(), '');

    // The logged-in manage token administers its own project's tokens.
    const reader = await kilnCli(['tokens', 'create', 'reader', '--scope', 'read', '--json']);
    assert.equal(reader.code, 0, reader.stderr);
    const readerToken = JSON.parse(reader.stdout.toString()) as { id: string; scope: string; token: string };
    assert.equal(readerToken.scope, 'read');
    const listed = (await kilnCli(['tokens', 'ls'])).stdout.toString();
    assert.match(listed, /^TOKEN ID +NAME +SCOPE +CREATED +REVOKED\n/);
    assert.match(listed, new RegExp(`\n${readerToken.id} +reader +read +\\S+ ago +-\n`));
    const revoked = await kilnCli(['tokens', 'revoke', readerToken.id]);
    assert.equal(revoked.code, 0, revoked.stderr);
    assert.equal(revoked.stdout.toString(), `${readerToken.id} revoked\n`);
    const afterRevoke = await kilnCli(['builds', 'ls'], { env: { KILN_TOKEN: readerToken.token } });
    assert.equal(afterRevoke.code, 4);
    // The revoked token came from KILN_TOKEN, which overrides kiln login.
    assert.match(afterRevoke.stderr, /\(unauthorized\)\nhint: KILN_TOKEN is set and overrides kiln login/);

    const projects = await kilnCli(['projects', 'ls'], { env: operator });
    assert.equal(projects.code, 0, projects.stderr);
    const rows = projects.stdout.toString().trim().split('\n');
    assert.match(
      rows[0] ?? '',
      /^PROJECT ID +NAME +STATUS +CREATED +MAX QUEUED +MAX RUNNING +MAX ARTIFACT +STORED$/,
    );
    assert.ok(
      rows.some((r) => / web-ci +active +\S+ ago +5 /.test(r)),
      rows.join('\n'),
    );
    const names = (
      JSON.parse((await kilnCli(['projects', 'ls', '--json'], { env: operator })).stdout.toString()) as {
        name: string;
      }[]
    ).map((p) => p.name);
    assert.ok(names.includes('cli') && names.includes('web-ci'), names.join(' '));

    const disabled = await kilnCli(['projects', 'set', 'web-ci', '--disable'], { env: operator });
    assert.equal(disabled.code, 0, disabled.stderr);
    assert.match(disabled.stdout.toString(), /\nStatus: +disabled\n(.|\n)*\nDisabled: +\d{4}-/);
    const blocked = await kilnCli(['builds', 'ls'], { env: asCi });
    assert.equal(blocked.code, 4);
    assert.equal(blocked.stderr, "error: the token's project is disabled (forbidden)\n");
    const enabled = await kilnCli(
      ['projects', 'set', 'web-ci', '--enable', '--max-queued', 'default', '--json'],
      {
        env: operator,
      },
    );
    assert.equal(enabled.code, 0, enabled.stderr);
    const view = JSON.parse(enabled.stdout.toString()) as {
      disabledAt: string | null;
      quotas: { queuedBuilds: number | null };
    };
    assert.equal(view.disabledAt, null);
    assert.equal(view.quotas.queuedBuilds, null);
    assert.equal((await kilnCli(['builds', 'ls', '-q'], { env: asCi })).code, 0);
    const stored = await kilnCli(['projects', 'set', 'web-ci', '--max-stored-bytes', '1048576'], {
      env: operator,
    });
    assert.equal(stored.code, 0, stored.stderr);
    const show = await kilnCli(['projects', 'show', 'web-ci'], { env: operator });
    assert.match(show.stdout.toString(), /\nStatus: +active\n(.|\n)*\nMax queued builds: +\d+ \(default\)\n/);
    assert.match(
      show.stdout.toString(),
      /\nStored: +\S+ \(\d+ bytes\)\nMax stored: +1\.05MB \(1048576 bytes\)\n/,
    );
    const unknown = await kilnCli(['projects', 'show', 'nope'], { env: operator });
    assert.equal(unknown.code, 1);
    assert.equal(unknown.stderr, 'error: no project nope (not_found)\n');
  });

  const sleepContext = (seconds: number) =>
    makeContext({
      busybox: { content: busybox, mode: 0o755 },
      Dockerfile: `FROM scratch\nCOPY busybox /bin/busybox\n${RUN(`echo going-to-sleep; sleep ${seconds}`)}\n`,
    });
  const sleeping = (seconds: number) => () =>
    Promise.resolve(execFileSync('ps', ['-eo', 'args'], { encoding: 'utf8' }).includes(`sleep ${seconds}`));

  test('builds cancel and logs -f on a running build; its kiln build fails with "canceled"', async () => {
    const ctx = await sleepContext(431);
    try {
      const building = start(
        ['build', '--network', 'none', '--no-cache', '--progress', 'plain', '-o', 'type=tar,dest=s.tar', '.'],
        {
          cwd: ctx.dir,
        },
      );
      await waitFor(
        async () => /kiln: build [0-9A-Z]+ queued/.test(building.stderr()),
        'the build to be submitted',
      );
      const id = buildIdFrom(building.stderr());
      await waitFor(sleeping(431), 'the RUN step');
      const follower = start(['builds', 'logs', '-f', id]);
      await waitFor(async () => (await getBuild(id)).status === 'running', 'running');
      const cancel = await kilnCli(['builds', 'cancel', '--wait', id]);
      assert.equal(cancel.code, 0, cancel.stderr);
      assert.equal(cancel.stdout.toString(), `${id} canceled\n`);
      const followed = await follower.done;
      assert.equal(followed.code, 0, followed.stderr);
      assert.match(followed.stdout.toString(), /going-to-sleep/);
      const r = await building.done;
      assert.equal(r.code, 1);
      assert.match(r.stderr, /\nerror: .*cancel.* \(canceled\)\n$/);
      await waitFor(async () => !(await sleeping(431)()), 'the RUN step to stop', 20_000);
    } finally {
      await ctx.cleanup();
    }
  });

  // SIGTERM: a CI job canceled; handled as Ctrl-C, not left running with a partial download.
  for (const [signal, seconds] of [
    ['SIGINT', 433],
    ['SIGTERM', 434],
  ] as const)
    test(`${signal === 'SIGINT' ? 'Ctrl-C (SIGINT)' : signal} during a sleep RUN cancels the remote build and exits 130`, async () => {
      const ctx = await sleepContext(seconds);
      try {
        const building = start(
          [
            'build',
            '--network',
            'none',
            '--no-cache',
            '--progress',
            'plain',
            '-o',
            'type=tar,dest=s.tar',
            '.',
          ],
          {
            cwd: ctx.dir,
          },
        );
        await waitFor(sleeping(seconds), 'the RUN step');
        const id = buildIdFrom(building.stderr());
        assert.equal((await getBuild(id)).status, 'running');
        building.child.kill(signal);
        const r = await building.done;
        assert.equal(r.code, 130, r.stderr);
        assert.match(
          r.stderr,
          new RegExp(`kiln: canceling build ${id}\nerror: interrupted: build ${id} canceled\n$`),
        );
        await waitFor(async () => (await getBuild(id)).status === 'canceled', 'status canceled', 30_000);
        await waitFor(async () => !(await sleeping(seconds)()), 'the RUN step to stop', 20_000);
        await assert.rejects(access(path.join(ctx.dir, 's.tar')));
      } finally {
        await ctx.cleanup();
      }
    });
});
