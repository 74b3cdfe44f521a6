// `npm start` installs what the service runs with; what only the tests use comes with `npm test`.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';

const root = fileURLToPath(new URL('..', import.meta.url));
const list = (purpose: string) =>
  execFileSync('bash', ['scripts/lib/ensure-deps.sh', '--list', purpose], { cwd: root, encoding: 'utf8' })
    .trim()
    .split('\n');
const TEST_ONLY_APT = [
  'apt chromium',
  'apt docker-compose',
  'apt docker-registry',
  'apt busybox-static',
  'apt attr',
  'apt runc',
];

test('npm start asks for the service dependencies only, npm test for the test ones too', () => {
  const run = list('run');
  assert.deepEqual(run, [
    'apt postgresql',
    'apt redis-server',
    'apt docker.io',
    'apt git',
    'npm ci --omit=dev',
  ]);
  const forTest = list('test');
  for (const line of [...run.filter((l) => l.startsWith('apt ')), ...TEST_ONLY_APT]) {
    assert.ok(forTest.includes(line), line);
  }
  assert.ok(forTest.includes('npm ci'));
  assert.match(readFileSync(path.join(root, 'scripts/start.sh'), 'utf8'), /^\tkiln_ensure_deps run$/m);
  assert.match(readFileSync(path.join(root, 'scripts/test.sh'), 'utf8'), /^\tkiln_ensure_deps test$/m);
});

// package-lock.json marks what `npm ci --omit=dev` leaves out with "dev": true.
const lock = JSON.parse(readFileSync(path.join(root, 'package-lock.json'), 'utf8')) as {
  packages: Record<string, { dev?: boolean; bin?: Record<string, string> }>;
};
const isDev = (name: string) => lock.packages[`node_modules/${name}`]?.dev === true;

test('npm ci --omit=dev installs the build tools and none of the test tools', () => {
  for (const name of ['s3rver', 'playwright-core', 'autocannon', '@biomejs/biome', 'tsx'])
    assert.ok(isDev(name), name);
  for (const name of ['typescript', 'turbo', 'prisma', 'esbuild', '@types/node', 'pino', 'fastify'])
    assert.ok(!isDev(name), name);
});

// npm start runs `npm run build`, so every workspace's build script may call only commands
// that `npm ci --omit=dev` installs (esbuild was a dev tool of apps/cli, and the build failed).
test('every build script runs with what npm ci --omit=dev installs', () => {
  const devBins = new Map<string, string>();
  for (const [key, entry] of Object.entries(lock.packages))
    if (entry.dev && key.startsWith('node_modules/'))
      for (const bin of Object.keys(entry.bin ?? {})) devBins.set(bin, key.slice('node_modules/'.length));
  assert.ok(devBins.has('tsx'), 'the lock lists dev packages with their commands');
  const offenders: string[] = [];
  for (const dir of [
    '.',
    ...['apps', 'packages'].flatMap((d) => readdirSync(path.join(root, d)).map((n) => `${d}/${n}`)),
  ]) {
    let pkg: { scripts?: Record<string, string> };
    try {
      pkg = JSON.parse(readFileSync(path.join(root, dir, 'package.json'), 'utf8'));
    } catch {
      continue;
    }
    for (const word of (pkg.scripts?.build ?? '').split(/[\s;&|()]+/)) {
      const tool = devBins.get(word);
      if (tool) offenders.push(`${dir}: ${word} (${tool})`);
    }
  }
  assert.deepEqual(offenders, []);
});

test('no runtime module imports a package that npm start does not install', () => {
  const offenders: string[] = [];
  for (const dir of ['apps', 'packages']) {
    for (const file of readdirSync(path.join(root, dir), { recursive: true, encoding: 'utf8' })) {
      if (!/\/src\/.*\.ts$/.test(file) || /\.test\.ts$/.test(file) || file.includes('node_modules')) continue;
      const source = readFileSync(path.join(root, dir, file), 'utf8');
      for (const [, spec = ''] of source.matchAll(/(?:from|import\()\s*'([^'.][^']*)'/g)) {
        const name = spec.startsWith('@')
          ? spec.split('/').slice(0, 2).join('/')
          : (spec.split('/')[0] ?? '');
        if (isDev(name)) offenders.push(`${dir}/${file}: ${name}`);
      }
    }
  }
  assert.deepEqual(offenders, []);
});
