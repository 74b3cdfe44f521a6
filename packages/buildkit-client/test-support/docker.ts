// Reference builds with the Docker CLI, to compare our client's exports against.
import { tmpdir } from 'node:os';
import { isAbsolute, join } from 'node:path';
import { run, type User } from './run.js';

// Debian's docker.io CLI: /usr/local/bin/docker would need the buildx plugin for BuildKit.
const DOCKER = '/usr/bin/docker';

export interface DockerBuildOptions {
  /** Path of the daemon's unix socket, e.g. process.env.KILN_TEST_DOCKER_SOCK. */
  socket: string;
  contextDir: string;
  /** Relative paths are taken from contextDir; defaults to contextDir/Dockerfile. */
  dockerfile?: string;
  target?: string;
  buildArgs?: Record<string, string>;
  /** Defaults to 'none': the test daemons have no bridge, so RUN fails with any other network. */
  network?: 'none' | 'host' | 'default';
  /** Tar file (dockerBuildTar) or directory (dockerBuildLocal) to export to. */
  dest: string;
  /** `--no-cache`: a daemon shared with other tests may hold a cached COPY with other mtimes. */
  noCache?: boolean;
  /** Run the CLI as this user (the socket must let it in, e.g. through a Forwarder). */
  asUser?: User;
}

export interface DockerBuildResult {
  stdout: string;
  stderr: string;
}

export class DockerBuildError extends Error {
  constructor(
    readonly exitCode: number | null,
    readonly stdout: string,
    readonly stderr: string,
  ) {
    super(`docker build failed (exit ${exitCode}):\n${stderr}`);
    this.name = 'DockerBuildError';
  }
}

function buildArgs(options: DockerBuildOptions, output: string): string[] {
  const args = ['build', '--progress=plain', `--network=${options.network ?? 'none'}`, '--output', output];
  if (options.dockerfile !== undefined) {
    args.push(
      '--file',
      isAbsolute(options.dockerfile) ? options.dockerfile : join(options.contextDir, options.dockerfile),
    );
  }
  if (options.target !== undefined) args.push('--target', options.target);
  if (options.noCache) args.push('--no-cache');
  for (const [key, value] of Object.entries(options.buildArgs ?? {}))
    args.push('--build-arg', `${key}=${value}`);
  args.push(options.contextDir);
  return args;
}

async function runDockerBuild(options: DockerBuildOptions, output: string): Promise<DockerBuildResult> {
  const env: NodeJS.ProcessEnv = {
    ...process.env,
    DOCKER_BUILDKIT: '1',
    DOCKER_HOST: `unix://${options.socket}`,
    // Another user cannot read root's CLI config (a warning only, but noise in every failure).
    ...(options.asUser ? { HOME: tmpdir() } : {}),
  };
  // These would point the CLI at another daemon or make it refuse DOCKER_HOST.
  delete env.DOCKER_CONTEXT;
  delete env.DOCKER_TLS_VERIFY;
  delete env.DOCKER_CERT_PATH;
  const result = await run(DOCKER, buildArgs(options, output), {
    env,
    ...(options.asUser ? { asUser: options.asUser } : {}),
  });
  if (result.code !== 0) throw new DockerBuildError(result.code, result.stdout, result.stderr);
  return { stdout: result.stdout, stderr: result.stderr };
}

/** `docker build --output type=tar,dest=<dest>`. */
export function dockerBuildTar(options: DockerBuildOptions): Promise<DockerBuildResult> {
  return runDockerBuild(options, `type=tar,dest=${options.dest}`);
}

/** `docker build --output type=local,dest=<dest>`. */
export function dockerBuildLocal(options: DockerBuildOptions): Promise<DockerBuildResult> {
  return runDockerBuild(options, `type=local,dest=${options.dest}`);
}
