// The reference side of the benchmarks: `docker build` on the private daemon, run as a
// timed command. Shared by measure.mjs (buildkit-client) and service-measure.mjs (service).

import { spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { machineBusySeconds, procCpuSeconds, shq, tail, waitExit } from './proc.mjs';
import { round } from './stats.mjs';

export const DOCKER = '/usr/bin/docker';
export const BUSYBOX = '/usr/bin/busybox';
export const TIME = '/usr/bin/time';

/** Environment for the docker CLI talking to the daemon on SOCK with BuildKit. */
export function dockerEnvFor(sock, env = process.env) {
  const out = { ...env, DOCKER_BUILDKIT: '1', DOCKER_HOST: `unix://${sock}` };
  delete out.DOCKER_CONTEXT;
  return out;
}

/** The docker CLI's and daemon's versions and storage driver, for a results file; `work` holds a scratch file. */
export async function dockerFacts(work, dockerEnv) {
  const ask = async (args) => {
    const file = path.join(work, 'version.txt');
    const fd = fs.openSync(file, 'w');
    const child = spawn(DOCKER, args, { env: dockerEnv, stdio: ['ignore', fd, 'ignore'] });
    await waitExit(child);
    fs.closeSync(fd);
    return fs.readFileSync(file, 'utf8').trim();
  };
  return {
    docker_client: await ask(['version', '--format', '{{.Client.Version}}']),
    docker_server: await ask(['version', '--format', '{{.Server.Version}}']),
    storage_driver: await ask(['info', '--format', '{{.Driver}}']),
  };
}

/** argv for docker build (reference client); `extraArgs` go before the context. */
export function dockerBuild(ctx, output, { quiet = false, extraArgs = [] } = {}) {
  return [
    DOCKER,
    'build',
    '--network=none',
    ...(quiet ? ['-q'] : ['--progress=plain']),
    '--output',
    output,
    ...extraArgs,
    ctx,
  ];
}

// Both benchmarks build the same two outputs (with the context's ./busybox), so that their
// figures can be read side by side: 512 MiB of random bytes and 2 GiB of zeros.
export const DOCKERFILE_512 = [
  'FROM scratch AS b',
  'COPY busybox /bin/busybox',
  'RUN ["/bin/busybox", "dd", "if=/dev/urandom", "of=/big", "bs=1M", "count=512"]',
  'FROM scratch',
  'COPY --from=b /big /big',
  '',
].join('\n');

export const DOCKERFILE_2G = [
  'FROM scratch AS b',
  'COPY busybox /bin/busybox',
  'RUN ["/bin/busybox", "dd", "if=/dev/zero", "of=/huge", "bs=1M", "count=2048"]',
  'FROM scratch',
  'COPY --from=b /huge /huge',
  '',
].join('\n');

/** A context directory with a Dockerfile and, optionally, the static busybox as ./busybox. */
export function writeContext(dir, dockerfile, withBusybox) {
  fs.mkdirSync(dir, { recursive: true });
  fs.writeFileSync(path.join(dir, 'Dockerfile'), dockerfile);
  if (withBusybox) fs.copyFileSync(BUSYBOX, path.join(dir, 'busybox'));
}

/**
 * Returns `run(label, producer, opts)`: runs `producer` (an argv) under /usr/bin/time,
 * optionally piped into `consumer` (an argv) through bash, and resolves to the wall time of
 * the whole thing plus the producer's CPU time and peak RSS, the daemon's CPU time over the
 * run (as `daemonKey`), and the CPU everything else on the machine used meanwhile. Scratch files go to `work`.
 */
export function makeRunner({ work, dockerdPid, daemonKey = 'dockerd_cpu_s', env = process.env }) {
  let runCounter = 0;
  /** The daemon's user+sys CPU seconds so far (dockerd's embedded BuildKit, or a buildkitd). */
  const dockerdCpuSeconds = () => procCpuSeconds(dockerdPid);

  return async function run(label, producer, { envVars, consumer, stdoutFile, capture } = {}) {
    const id = ++runCounter;
    const timeFile = path.join(work, `time-${id}.txt`);
    const logFile = path.join(work, `log-${id}-${label}.txt`);
    const outFile = path.join(work, `stdout-${id}.txt`);
    const timed = [TIME, '-f', '%e %U %S %M', '-o', timeFile, ...producer];
    let argv;
    if (consumer) {
      const script = `set -o pipefail; ${timed.map(shq).join(' ')} | ${consumer.map(shq).join(' ')}`;
      argv = ['bash', '-c', script];
    } else {
      argv = timed;
    }
    const errFd = fs.openSync(logFile, 'w');
    const outFd = consumer || stdoutFile || capture ? fs.openSync(stdoutFile ?? outFile, 'w') : 'ignore';
    const cpu0 = dockerdCpuSeconds();
    const busy0 = machineBusySeconds();
    const t0 = performance.now();
    const child = spawn(argv[0], argv.slice(1), {
      env: envVars ?? env,
      stdio: ['ignore', outFd, errFd],
    });
    const { code, signal } = await waitExit(child);
    const wall = (performance.now() - t0) / 1000;
    const daemonCpu = dockerdCpuSeconds() - cpu0;
    const machineBusy = machineBusySeconds() - busy0;
    fs.closeSync(errFd);
    if (typeof outFd === 'number') fs.closeSync(outFd);
    if (code !== 0) {
      throw new Error(
        `${label} failed (${signal ?? `exit ${code}`}): ${argv.map(shq).join(' ')}\n${tail(logFile)}`,
      );
    }
    const [, user, sys, rssKiB] = fs.readFileSync(timeFile, 'utf8').trim().split('\n').pop().split(' ');
    const result = {
      wall_s: round(wall, 3),
      client_cpu_s: round(Number(user) + Number(sys), 2),
      client_user_s: Number(user),
      client_sys_s: Number(sys),
      client_peak_rss_mib: round(Number(rssKiB) / 1024, 1),
      [daemonKey]: round(daemonCpu, 2),
      // Everything else the machine did meanwhile: containerd, the kernel, the sink, and any
      // unrelated load (a noise indicator: it should be small).
      other_cpu_s: round(Math.max(0, machineBusy - daemonCpu - Number(user) - Number(sys)), 2),
    };
    if (consumer || capture) {
      const last = JSON.parse(fs.readFileSync(outFile, 'utf8').trim().split('\n').pop());
      if (consumer) result.sink = last;
      else result.output = last;
    }
    fs.rmSync(timeFile, { force: true });
    fs.rmSync(outFile, { force: true });
    return result;
  };
}
