// `kiln build` with the contexts docker takes besides a directory, against a real Kiln whose
// builder is the standalone buildkitd v0.24.0 (`#ref:subdir` needs BuildKit >= 0.9): git
// repositories served on loopback over smart HTTP and git://, and stdin (tar, gzip, Dockerfile).
import assert from 'node:assert/strict';
import { execFileSync, spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { gzipSync } from 'node:zlib';
import { readTarEntries } from '../../../packages/buildkit-client/test-support/tar-entries.js';
import { type GitRepo, startGitRepo } from '../../../test/support/git-repo.js';
import { startTestKiln, type TestKiln } from '../../../test/support/kiln.js';

const KILN_BIN = fileURLToPath(new URL('../bin/kiln.js', import.meta.url));
const sha256 = (text: string) => createHash('sha256').update(text).digest('hex');

interface Result {
  code: number | null;
  stderr: string;
}

describe('kiln build with git and stdin contexts', () => {
  let kiln: TestKiln;
  let repo: GitRepo;
  let dir = '';

  /** Runs kiln with `input` on stdin, writing the tar to `out.tar` in `dir`. */
  const kilnBuild = (context: string, input?: Buffer, extra: string[] = []) =>
    new Promise<Result>((resolve, reject) => {
      const child = spawn(
        process.execPath,
        [KILN_BIN, 'build', '--progress', 'plain', '-o', 'type=tar,dest=out.tar', ...extra, context],
        {
          cwd: dir,
          env: { ...process.env, HOME: dir, KILN_URL: kiln.url, KILN_TOKEN: kiln.token },
          stdio: [input ? 'pipe' : 'ignore', 'ignore', 'pipe'],
        },
      );
      let stderr = '';
      child.stderr?.on('data', (c: Buffer) => {
        stderr += c.toString();
      });
      child.stdin?.end(input);
      child.on('error', reject);
      child.on('close', (code) => resolve({ code, stderr }));
    });
  const outEntries = async () => readTarEntries(await readFile(path.join(dir, 'out.tar')));

  before(async () => {
    const buildkitd = process.env.KILN_TEST_BUILDKITD_ADDR;
    assert.ok(buildkitd, 'KILN_TEST_BUILDKITD_ADDR is not set: run through `npm test`');
    dir = await mkdtemp(path.join(os.tmpdir(), 'kiln-contexts-'));
    repo = await startGitRepo('contexts');
    kiln = await startTestKiln({ worker: true, project: 'contexts', env: { KILN_BUILDERS: buildkitd } });
  });
  after(async () => {
    await kiln?.stop();
    await repo?.stop();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  test('https://…/repo.git#branch:subdir builds that directory of that branch', async () => {
    repo.commit({
      'app/Dockerfile': 'FROM scratch\nCOPY hello.txt /from-subdir.txt\n',
      'app/hello.txt': 'main\n',
    });
    repo.commit(
      { 'app/Dockerfile': 'FROM scratch\nCOPY hello.txt /from-subdir.txt\n', 'app/hello.txt': 'topic\n' },
      'topic',
    );
    const r = await kilnBuild(`${repo.httpUrl}#topic:app`);
    assert.equal(r.code, 0, r.stderr);
    assert.doesNotMatch(r.stderr, /sent the build context/);
    const file = (await outEntries()).find((e) => e.name === 'from-subdir.txt');
    assert.equal(file?.sha256, sha256('topic\n'));
  });

  test('git://…#ref with -f naming a Dockerfile in the repository', async () => {
    repo.commit(
      {
        'build/other.Dockerfile': 'FROM scratch\nCOPY app/hello.txt /via-git-protocol.txt\n',
        'app/hello.txt': 'release\n',
      },
      'release',
    );
    const r = await kilnBuild(`${repo.gitUrl}#release`, undefined, ['-f', 'build/other.Dockerfile']);
    assert.equal(r.code, 0, r.stderr);
    const file = (await outEntries()).find((e) => e.name === 'via-git-protocol.txt');
    assert.equal(file?.sha256, sha256('release\n'));
  });

  test('a git build the service refuses names why (credentials in the URL), exit 1', async () => {
    const r = await kilnBuild('https://user:pw@127.0.0.1:1/x.git');
    assert.equal(r.code, 1, r.stderr);
    assert.match(r.stderr, /credentials in the URL are not supported .*\(invalid_spec\)/);
  });

  test('-f outside the context with its own .dockerignore: what it excludes never leaves this machine', async () => {
    const app = path.join(dir, 'outside-app');
    await mkdir(path.join(dir, 'docker'), { recursive: true });
    await mkdir(app);
    await writeFile(path.join(app, '.env'), 'TOKEN=secret\n');
    await writeFile(path.join(app, '.dockerignore'), 'main.py\n');
    await writeFile(path.join(app, 'main.py'), 'print()\n');
    await writeFile(path.join(dir, 'docker/app.Dockerfile'), 'FROM scratch\nCOPY . /app/\n');
    await writeFile(path.join(dir, 'docker/app.Dockerfile.dockerignore'), '.env\n');
    const r = await kilnBuild('outside-app', undefined, ['-f', 'docker/app.Dockerfile']);
    assert.equal(r.code, 0, r.stderr);
    // As docker builds it: the Dockerfile's own ignore file decides, the context's does not.
    const names = (await outEntries()).map((e) => e.name).sort();
    assert.deepEqual(names, ['app', 'app/.dockerignore', 'app/main.py']);
  });

  describe('stdin', () => {
    let tar: Buffer;
    before(async () => {
      const ctx = path.join(dir, 'ctx');
      await mkdir(ctx);
      await writeFile(path.join(ctx, 'Dockerfile'), 'FROM scratch\nCOPY piped.txt /piped.txt\n');
      await writeFile(path.join(ctx, 'piped.txt'), 'piped in\n');
      tar = execFileSync('tar', ['-cf', '-', '-C', ctx, '.']);
    });

    for (const [name, input] of [
      ['a tar', () => tar],
      ['a gzip-compressed tar', () => gzipSync(tar)],
    ] as const) {
      test(`kiln build - < ${name}`, async () => {
        const r = await kilnBuild('-', input());
        assert.equal(r.code, 0, r.stderr);
        assert.match(r.stderr, /kiln: sent the build context from stdin: [\d.]+k?B \((tar|gzip)\) in /);
        const file = (await outEntries()).find((e) => e.name === 'piped.txt');
        assert.equal(file?.sha256, sha256('piped in\n'));
      });
    }

    test('kiln build - < Dockerfile: the Dockerfile with an empty context', async () => {
      const built = await kilnBuild('-', Buffer.from('FROM scratch\nWORKDIR /made-from-stdin\n'));
      assert.equal(built.code, 0, built.stderr);
      assert.ok((await outEntries()).some((e) => e.name === 'made-from-stdin' && e.type === 'dir'));
      // Nothing of the working directory went along.
      const copy = await kilnBuild('-', Buffer.from('FROM scratch\nCOPY out.tar /\n'));
      assert.equal(copy.code, 1, copy.stderr);
      assert.match(copy.stderr, /out\.tar.*not found|not found.*out\.tar/);
    });

    test('an archive without the Dockerfile: the server says so, exit 1', async () => {
      const r = await kilnBuild('-', tar, ['-f', 'nope/Dockerfile']);
      assert.equal(r.code, 1, r.stderr);
      assert.match(r.stderr, /nope\/Dockerfile/);
    });
  });
});
