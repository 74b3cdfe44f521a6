// The BuildKit generations the end-to-end tests run on: dockerd 20.10's embedded BuildKit 0.8
// and the standalone buildkitd v0.24.0 that `npm test` starts. Each comes with the reference
// CLI a Kiln artifact is compared with (docker build, buildctl) on the same daemon.
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { connect } from '@kiln/buildkit-client';
import { dockerBuildTar } from '../../packages/buildkit-client/test-support/docker.js';

const run = promisify(execFile);

export interface ReferenceBuild {
  contextDir: string;
  buildArgs?: Record<string, string>;
  /** Tar file to export to. */
  dest: string;
}

export interface Generation {
  /** For test names, e.g. "dockerd 20.10 (BuildKit 0.8)". */
  name: string;
  /** A KILN_BUILDERS address. */
  address: string;
  /**
   * Whether it has the oci and docker exporters: dockerd 20.10's moby worker has not (a solve
   * asking for one fails with 'exporter "oci" could not be found').
   */
  imageExporters: boolean;
  /** The reference CLI's `--output type=tar,dest=…` of the same build, network none. */
  referenceTar(build: ReferenceBuild): Promise<void>;
}

function required(name: string): string {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is not set: run through \`npm test\``);
  return value;
}

export function dockerdGeneration(): Generation {
  const socket = required('KILN_TEST_DOCKER_SOCK');
  return {
    name: 'dockerd 20.10 (BuildKit 0.8)',
    address: `docker://${socket}`,
    imageExporters: false,
    async referenceTar(b) {
      await dockerBuildTar({ socket, contextDir: b.contextDir, dest: b.dest, buildArgs: b.buildArgs ?? {} });
    },
  };
}

export function buildkitdGeneration(): Generation {
  const address = required('KILN_TEST_BUILDKITD_ADDR');
  const buildctl = required('KILN_TEST_BUILDCTL');
  return {
    name: 'buildkitd v0.24.0',
    address,
    imageExporters: true,
    async referenceTar(b) {
      const args = ['--addr', address, 'build', '--progress=plain', '--frontend', 'dockerfile.v0'];
      args.push('--local', `context=${b.contextDir}`, '--local', `dockerfile=${b.contextDir}`);
      args.push('--opt', 'force-network-mode=none', '--output', `type=tar,dest=${b.dest}`);
      for (const [k, v] of Object.entries(b.buildArgs ?? {})) args.push('--opt', `build-arg:${k}=${v}`);
      await run(buildctl, args, { maxBuffer: 16 * 1024 * 1024 });
    },
  };
}

/** Both generations; throws when `npm test` did not provide one (nothing is skipped). */
export function generations(): Generation[] {
  return [dockerdGeneration(), buildkitdGeneration()];
}

/**
 * The platforms a daemon reports (os/arch[/variant], in its order, once each), from its own
 * ListWorkers answer. They depend on the machine: BuildKit lists linux/386 only where the
 * kernel runs a 32-bit x86 program it tries, and linux/amd64/v3 only on a CPU with AVX2, so
 * tests take them from the daemon rather than from a list written for one machine.
 */
export async function reportedPlatforms(address: string): Promise<string[]> {
  const client = await connect(address);
  try {
    const names = (await client.listWorkers()).flatMap((w) =>
      w.platforms.map((p) => [p.os, p.architecture, p.variant].filter(Boolean).join('/')),
    );
    return [...new Set(names)];
  } finally {
    await client.close();
  }
}
