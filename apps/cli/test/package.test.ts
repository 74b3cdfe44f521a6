// The packages as users install them (test/install.ts): `kiln` and `bkctl` from their tarballs,
// outside the repository, building against the services `npm test` provides; and the
// buildkit-client README's example, run as written from an empty directory.
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdir, readdir, readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { promisify } from 'node:util';
import { readTarEntries } from '../../../packages/buildkit-client/test-support/tar-entries.js';
import { type Installed, packAndInstall } from './install.js';
import { type RunningKiln, startKiln } from './kiln-service.js';

const run = promisify(execFile);
const ROOT = path.resolve(import.meta.dirname, '../../..');
const HELLO = 'hello from an installed package\n';
const sha256 = (text: string) => createHash('sha256').update(text).digest('hex');

/** A context a build needs nothing pulled for. */
async function helloContext(dir: string): Promise<string> {
  await mkdir(dir, { recursive: true });
  await writeFile(path.join(dir, 'Dockerfile'), 'FROM scratch\nCOPY hello.txt /hello.txt\n');
  await writeFile(path.join(dir, 'hello.txt'), HELLO);
  return dir;
}

async function assertHelloTar(file: string): Promise<void> {
  const hello = (await readTarEntries(file)).find((e) => e.name === 'hello.txt');
  assert.ok(hello, `${file} has no hello.txt`);
  assert.equal(hello.sha256, sha256(HELLO));
}

/** A `- ` list's items under `key:` in a YAML block (two more spaces of indent), one line each. */
function yamlList(yaml: string, key: string): string[] {
  const lines = yaml.split('\n');
  const at = lines.findIndex((l) => l.trim() === `${key}:`);
  assert.ok(at >= 0, `no ${key}: in\n${yaml}`);
  const indent = (lines[at] as string).search(/\S/);
  const items: string[] = [];
  for (const line of lines.slice(at + 1)) {
    if (line.search(/\S/) <= indent) break;
    const item = line.match(/^\s*- (.*)$/)?.[1];
    if (item) items.push(item);
  }
  return items;
}

/** The README's block that follows `marker`, fenced as `lang`. */
export function readmeBlock(text: string, marker: string, lang: string): string {
  const at = text.indexOf(marker);
  assert.ok(at >= 0, `README has no "${marker}"`);
  const open = text.indexOf(`\`\`\`${lang}\n`, at);
  assert.ok(open >= 0, `no ${lang} block after "${marker}"`);
  const start = open + lang.length + 4;
  return text.slice(start, text.indexOf('\n```', start) + 1);
}

describe('kiln and bkctl installed from their tarballs', () => {
  let installed: Installed;
  let kiln: RunningKiln;
  const buildkitd = process.env.KILN_TEST_BUILDKITD_ADDR;

  before(async () => {
    assert.ok(buildkitd, 'KILN_TEST_BUILDKITD_ADDR is not set: run through `npm test`');
    // Both at once, and both awaited before any failure is thrown, so `after` stops what started.
    const [i, k] = await Promise.allSettled([packAndInstall(), startKiln()]);
    if (i.status === 'fulfilled') installed = i.value;
    if (k.status === 'fulfilled') kiln = k.value;
    for (const r of [i, k]) if (r.status === 'rejected') throw r.reason;
  });
  after(async () => {
    await kiln?.stop();
    await installed?.remove();
  });

  test('both carry what a published package needs; the CLI is one bundled file with no dependency', async () => {
    const modules = path.join(installed.prefix, 'lib/node_modules/@kiln');
    const manifest = async (name: string) =>
      JSON.parse(await readFile(path.join(modules, name, 'package.json'), 'utf8')) as Record<string, unknown>;
    for (const name of ['cli', 'buildkit-client']) {
      const pkg = await manifest(name);
      assert.equal(pkg.private, undefined, name);
      for (const field of ['license', 'repository', 'engines', 'files', 'exports', 'bin'])
        assert.ok(pkg[field], `${name}: ${field}`);
      assert.ok((await readdir(path.join(modules, name))).includes('LICENSE'), name);
    }
    assert.equal((await manifest('cli')).dependencies, undefined);
    assert.deepEqual((await readdir(path.join(modules, 'cli'))).sort(), [
      'LICENSE',
      'README.md',
      'bin',
      'dist',
      'package.json',
    ]);
    assert.deepEqual(await readdir(path.join(modules, 'cli/dist')), ['main.js', 'main.js.map'].sort());
  });

  test("the CLI README's install block, run as written beside the tarball: kiln --version prints the version", async () => {
    const { version } = JSON.parse(await readFile(path.join(ROOT, 'apps/cli/package.json'), 'utf8')) as {
      version: string;
    };
    const block = readmeBlock(
      await readFile(path.join(ROOT, 'apps/cli/README.md'), 'utf8'),
      '## Install',
      'sh',
    );
    const env = installed.jobEnv(path.join(installed.dir, 'readme-install'));
    const r = await run('sh', ['-ec', block], { cwd: path.dirname(installed.tarballs.cli), env });
    assert.equal(r.stdout.split('\n').at(-2), `kiln version ${version}`);
  });

  test('bkctl --version prints its package version', async () => {
    const { version } = JSON.parse(
      await readFile(path.join(ROOT, 'packages/buildkit-client/package.json'), 'utf8'),
    ) as { version: string };
    const r = await run('bkctl', ['--version'], { env: installed.env(), cwd: installed.home });
    assert.equal(r.stdout, `bkctl version ${version}\n`);
  });

  test('kiln build against the service writes the tar', async () => {
    const ctx = await helloContext(path.join(installed.dir, 'kiln-ctx'));
    const dest = path.join(installed.dir, 'kiln.tar');
    await run('kiln', ['build', ctx, '--output', `type=tar,dest=${dest}`, '--progress', 'plain'], {
      env: installed.env({ KILN_URL: kiln.url, KILN_TOKEN: kiln.token }),
      cwd: installed.home,
    });
    await assertHelloTar(dest);
  });

  test('bkctl build against buildkitd writes the tar', async () => {
    const ctx = await helloContext(path.join(installed.dir, 'bkctl-ctx'));
    const dest = path.join(installed.dir, 'bkctl.tar');
    await run(
      'bkctl',
      [
        '--addr',
        buildkitd as string,
        'build',
        '--local',
        `context=${ctx}`,
        '--local',
        `dockerfile=${ctx}`,
        '--output',
        `type=tar,dest=${dest}`,
      ],
      { env: installed.env(), cwd: installed.home },
    );
    await assertHelloTar(dest);
  });

  test("the buildkit-client README's example runs as written from an empty directory", async () => {
    const readme = await readFile(path.join(ROOT, 'packages/buildkit-client/README.md'), 'utf8');
    const app = path.join(installed.dir, 'app');
    await mkdir(app);
    // The README's install line, with the tarball for the registry name it offers as an alternative.
    const install = readmeBlock(readme, 'Install it into any project', 'sh');
    assert.match(install, /npm install \.\/kiln-buildkit-client-[\d.]+\.tgz/);
    await run('npm', ['install', '--no-audit', '--no-fund', installed.tarballs.client], {
      cwd: app,
      env: installed.env(),
    });
    await writeFile(path.join(app, 'build.mjs'), readmeBlock(readme, 'save this as `build.mjs`', 'js'));
    await helloContext(app);
    await writeFile(path.join(app, '.dockerignore'), 'node_modules\n');
    const command = readme.match(/run `(BUILDKIT_HOST=\S+ node build\.mjs)`/)?.[1];
    assert.ok(command, 'README names no command for build.mjs');
    await run('sh', ['-c', command.replace(/^BUILDKIT_HOST=\S+/, 'BUILDKIT_HOST="$ADDR"')], {
      cwd: app,
      env: installed.env({ ADDR: buildkitd as string }),
    });
    await assertHelloTar(path.join(app, 'app.tar'));
  });

  describe('the CI examples of apps/cli/README.md, their shell steps run as written', () => {
    let readme = '';
    before(async () => {
      readme = await readFile(path.join(ROOT, 'apps/cli/README.md'), 'utf8');
    });

    /**
     * Runs `steps` one by one as the CI would (sh -e, in a checkout holding a context), with a
     * global npm prefix of the job's own, and the variables the CI's secret store provides.
     */
    const runSteps = async (name: string, steps: string[]) => {
      const job = path.join(installed.dir, name);
      const checkout = await helloContext(path.join(job, 'checkout'));
      const env = installed.jobEnv(path.join(job, 'prefix'), {
        KILN_CLI_PACKAGE: installed.tarballs.cli,
        KILN_URL: kiln.url,
        KILN_TOKEN: kiln.token,
      });
      for (const step of steps) await run('sh', ['-ec', step], { cwd: checkout, env });
      return checkout;
    };

    test('GitHub Actions: install, build, app.tar kept as the artifact', async () => {
      const yaml = readmeBlock(readme, 'GitHub Actions (', 'yaml');
      assert.match(yaml, /KILN_TOKEN: \$\{\{ secrets\.KILN_TOKEN \}\}/);
      const steps = [...yaml.matchAll(/^\s*- run: (.+)$/gm)].map((m) => m[1] as string);
      assert.equal(steps.length, 2, yaml);
      const artifact = yaml.match(/upload-artifact@\S+\n(?:.*\n)*?\s+path: (\S+)/)?.[1];
      assert.ok(artifact, yaml);
      await assertHelloTar(path.join(await runSteps('github', steps), artifact));
    });

    test('GitLab CI: install, build, app.tar kept as the artifact', async () => {
      const yaml = readmeBlock(readme, 'GitLab CI (', 'yaml');
      const steps = yamlList(yaml, 'script');
      assert.equal(steps.length, 2, yaml);
      const [artifact] = yamlList(yaml, 'paths');
      assert.ok(artifact, yaml);
      await assertHelloTar(path.join(await runSteps('gitlab', steps), artifact));
    });
  });

  test('exit codes a CI can rely on: 1 build failed, 2 usage, 3 unavailable, 4 auth', async () => {
    const ctx = path.join(installed.dir, 'failing');
    await mkdir(ctx);
    await writeFile(path.join(ctx, 'Dockerfile'), 'FROM scratch\nCOPY missing.txt /\n');
    const exit = (args: string[], env: Record<string, string>) =>
      run('kiln', args, { env: installed.env(env), cwd: ctx }).then(
        () => 0,
        (err: { code: number }) => err.code,
      );
    const build = ['build', '.', '--output', 'type=tar,dest=x.tar', '--progress', 'quiet'];
    const service = { KILN_URL: kiln.url, KILN_TOKEN: kiln.token };
    assert.equal(await exit(build, service), 1);
    assert.equal(await exit([...build, '--network', 'host'], service), 2);
    assert.equal(await exit(build, { ...service, KILN_URL: 'http://127.0.0.1:1' }), 3);
    assert.equal(await exit(build, { ...service, KILN_TOKEN: 'not-a-token' }), 4);
  });

  test('no document tells users to run npx kiln (outside the repository it is another package)', async () => {
    const docs = ['README.md', 'apps/cli/README.md', 'packages/buildkit-client/README.md'];
    for (const name of await readdir(path.join(ROOT, 'docs')))
      if (name.endsWith('.md')) docs.push(`docs/${name}`);
    for (const doc of docs) {
      assert.doesNotMatch(await readFile(path.join(ROOT, doc), 'utf8'), /npx kiln\b/, doc);
    }
  });
});
