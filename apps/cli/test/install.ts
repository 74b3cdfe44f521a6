// `@kiln/cli` and `@kiln/buildkit-client` as a user gets them: packed with `npm pack` (from the
// dist `npm run build` made) and installed from the tarballs into a temp directory outside the
// repository, with its own npm prefix and cache, so nothing of the workspace's node_modules can
// stand in for what the packages fail to carry. The registry is still used for their
// dependencies (the CLI's; the BuildKit client has none).
import { execFile } from 'node:child_process';
import { mkdir, mkdtemp, readFile, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';

const run = promisify(execFile);
const ROOT = path.resolve(import.meta.dirname, '../../..');

export interface Installed {
  /** The temp root: packs/, cache/, global/ (the -g prefix), home/. */
  dir: string;
  /** Paths of the tarballs, by package name. */
  tarballs: { cli: string; client: string };
  /** The -g prefix, whose bin/ holds kiln and bkctl. */
  prefix: string;
  /** A HOME with nothing in it. */
  home: string;
  /**
   * An environment with none of the workspace in it: PATH is the prefix's bin, node's directory
   * and the system's; no npm_*, KILN_*, NODE_OPTIONS or NODE_PATH of the `npm test` that runs us.
   */
  env(extra?: Record<string, string>): NodeJS.ProcessEnv;
  /** The same, for a job that installs on its own: `npm install -g` goes into `prefix`. */
  jobEnv(prefix: string, extra?: Record<string, string>): NodeJS.ProcessEnv;
  remove(): Promise<void>;
}

function cleanEnv(prefixBin: string, extra: Record<string, string> = {}): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) {
    if (/^(npm_|NODE_OPTIONS$|NODE_PATH$|KILN_|INIT_CWD$|BUILDKIT_HOST$)/i.test(k)) continue;
    env[k] = v;
  }
  env.PATH = [
    prefixBin,
    path.dirname(process.execPath),
    '/usr/local/sbin',
    '/usr/sbin',
    '/usr/bin',
    '/bin',
  ].join(':');
  return { ...env, ...extra };
}

/** Packs both packages and installs them globally under a fresh prefix. */
export async function packAndInstall(): Promise<Installed> {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'kiln-install-'));
  const packs = path.join(dir, 'packs');
  const prefix = path.join(dir, 'global');
  const home = path.join(dir, 'home');
  await Promise.all([mkdir(packs), mkdir(home)]);
  const jobEnv = (jobPrefix: string, extra: Record<string, string> = {}) =>
    cleanEnv(path.join(jobPrefix, 'bin'), {
      // The user's npm settings (registry, proxy) still apply under the empty HOME.
      npm_config_userconfig: path.join(os.homedir(), '.npmrc'),
      npm_config_cache: path.join(dir, 'cache'),
      npm_config_prefix: jobPrefix,
      HOME: home,
      ...extra,
    });
  // --ignore-scripts: prepack would build again; `npm test` has built dist already.
  await run(
    'npm',
    [
      'pack',
      '--ignore-scripts',
      '--pack-destination',
      packs,
      '-w',
      '@kiln/cli',
      '-w',
      '@kiln/buildkit-client',
    ],
    { cwd: ROOT, env: jobEnv(prefix) },
  );
  const version = async (p: string) =>
    (JSON.parse(await readFile(path.join(ROOT, p, 'package.json'), 'utf8')) as { version: string }).version;
  const tarballs = {
    cli: path.join(packs, `kiln-cli-${await version('apps/cli')}.tgz`),
    client: path.join(packs, `kiln-buildkit-client-${await version('packages/buildkit-client')}.tgz`),
  };
  await run(
    'npm',
    ['install', '-g', '--prefix', prefix, '--no-audit', '--no-fund', tarballs.cli, tarballs.client],
    {
      cwd: dir,
      env: jobEnv(prefix),
    },
  );
  return {
    dir,
    tarballs,
    prefix,
    home,
    env: (extra = {}) => jobEnv(prefix, extra),
    jobEnv,
    remove: () => rm(dir, { recursive: true, force: true }),
  };
}
