// Runs a reference tool (docker, buildctl, bkctl) as a child process, optionally as another user.
import { spawn } from 'node:child_process';

/** A uid/gid that owns nothing on the machine: the tests run as root and play a developer with it. */
export interface User {
  uid: number;
  gid: number;
}

export const DEVELOPER: User = { uid: 1234, gid: 2345 };

export interface RunResult {
  code: number | null;
  timedOut: boolean;
  stdout: string;
  stderr: string;
}

/**
 * Runs `command args`; with `asUser`, through util-linux's setpriv with no supplementary groups.
 * With `timeoutMs`, a child still running then is killed and `timedOut` is set.
 */
export function run(
  command: string,
  args: string[],
  options: { env?: NodeJS.ProcessEnv; cwd?: string; asUser?: User; timeoutMs?: number } = {},
): Promise<RunResult> {
  const { asUser } = options;
  const [file, argv] = asUser
    ? [
        'setpriv',
        [`--reuid=${asUser.uid}`, `--regid=${asUser.gid}`, '--clear-groups', '--', command, ...args],
      ]
    : [command, args];
  return new Promise((resolve, reject) => {
    const child = spawn(file, argv, {
      env: options.env ?? process.env,
      ...(options.cwd ? { cwd: options.cwd } : {}),
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    const stdout: Buffer[] = [];
    const stderr: Buffer[] = [];
    child.stdout.on('data', (chunk: Buffer) => stdout.push(chunk));
    child.stderr.on('data', (chunk: Buffer) => stderr.push(chunk));
    let timedOut = false;
    const timer =
      options.timeoutMs === undefined
        ? undefined
        : setTimeout(() => {
            timedOut = true;
            child.kill('SIGKILL');
          }, options.timeoutMs);
    child.on('error', reject);
    child.on('close', (code) => {
      clearTimeout(timer);
      resolve({
        code,
        timedOut,
        stdout: Buffer.concat(stdout).toString(),
        stderr: Buffer.concat(stderr).toString(),
      });
    });
  });
}
