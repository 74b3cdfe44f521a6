// Reference builds with the real buildctl against a standalone buildkitd, and the same build
// with bkctl: the two command lines differ only in the program, as the fidelity corpus claims.
import { fileURLToPath } from 'node:url';
import { type RunResult, run, type User } from './run.js';

export const BKCTL = fileURLToPath(new URL('../bin/bkctl.js', import.meta.url));

export interface CtlBuildOptions {
  /** unix:// or docker:// (bkctl only) address. */
  addr: string;
  contextDir: string;
  dockerfileDir: string;
  /** Name of the Dockerfile inside dockerfileDir. */
  filename?: string;
  target?: string;
  buildArgs?: Record<string, string>;
  /** Extra frontend options, e.g. { 'no-cache': '' }. */
  opts?: Record<string, string>;
  /** Tar file to export to. */
  dest: string;
  asUser?: User;
  /** More flags after `build`, e.g. bkctl's --keep-ownership. */
  flags?: string[];
  timeoutMs?: number;
}

export function ctlBuildArgs(o: CtlBuildOptions): string[] {
  const opts: Record<string, string> = {
    'force-network-mode': 'none',
    ...(o.filename ? { filename: o.filename } : {}),
    ...(o.target ? { target: o.target } : {}),
    ...Object.fromEntries(Object.entries(o.buildArgs ?? {}).map(([k, v]) => [`build-arg:${k}`, v])),
    ...o.opts,
  };
  return [
    '--addr',
    o.addr,
    'build',
    ...(o.flags ?? []),
    '--frontend',
    'dockerfile.v0',
    '--local',
    `context=${o.contextDir}`,
    '--local',
    `dockerfile=${o.dockerfileDir}`,
    ...Object.entries(opts).flatMap(([k, v]) => ['--opt', `${k}=${v}`]),
    '--output',
    `type=tar,dest=${o.dest}`,
    '--progress',
    'plain',
  ];
}

/** `buildctl build ...` (program: $KILN_TEST_BUILDCTL) or the same arguments to bkctl. */
export async function ctlBuild(program: 'buildctl' | 'bkctl', o: CtlBuildOptions): Promise<RunResult> {
  const buildctl = process.env.KILN_TEST_BUILDCTL;
  if (program === 'buildctl' && !buildctl)
    throw new Error('KILN_TEST_BUILDCTL is not set: run through `npm test`');
  const [command, prefix] = program === 'buildctl' ? [buildctl as string, []] : [process.execPath, [BKCTL]];
  return run(command, [...prefix, ...ctlBuildArgs(o)], {
    // buildctl reads ~/.docker/config.json for registry auth; another user cannot read root's.
    env: o.asUser ? { ...process.env, HOME: '/tmp' } : process.env,
    ...(o.asUser ? { asUser: o.asUser } : {}),
    ...(o.timeoutMs !== undefined ? { timeoutMs: o.timeoutMs } : {}),
  });
}
