#!/usr/bin/env node
// Runs the buildkit-client benchmarks against a private dockerd (reference: the docker CLI)
// and a standalone buildkitd (reference: buildctl) and writes the raw results as JSON.
// Driven by bench/run.sh, which starts the daemons and passes:
//   BENCH_ONLY          "" (both daemons) | dockerd | buildkitd
//   BENCH_SOCK          dockerd's unix socket (unless BENCH_ONLY=buildkitd)
//   BENCH_DOCKERD_PID   its pid (to account daemon CPU time per run)
//   BENCH_BK_ADDR       buildkitd's address, unix://SOCK (unless BENCH_ONLY=dockerd)
//   BENCH_BUILDKITD_PID its pid
//   BENCH_BUILDCTL      the buildctl binary (same release as the buildkitd)
//   BENCH_WORK          scratch directory (contexts, outputs, logs); removed by run.sh
//   BENCH_OUT           where to write the JSON
//   BENCH_PROFILE_DIR   where a CPU profile of bkctl goes when the export target is missed
//   BENCH_SAMPLES       samples per side after the warm-up (default 5)
//   BENCH_SINK_MIBPS    slow consumer rate for the peak-RSS benchmark (default 256)
//   BENCH_PROFILE       "always" | "never" | "auto" (default: profile when a target is missed)
//   BENCH_BUSY_MAX      share of a core other processes may use during a timed run before its
//                       pair is retaken (default 0.25)
//   BENCH_CLIENT_DIR    a frozen copy of packages/buildkit-client (bin, dist, proto) to run
//   BENCH_NODE          the node binary that runs bkctl (default: the one running this script)
//   BENCH_GIT_HEAD, BENCH_GIT_DIRTY   recorded with the results to identify the client
//
// Every figure is the wall-clock time of a whole command (process start to exit),
// measured here around the spawn, for the reference (`docker build`, `buildctl build`) and
// bkctl alike. Each command runs under /usr/bin/time to also record its CPU time and peak
// RSS, and the daemon's CPU time is read from /proc before and after, to see which side is busy.

import { execFileSync } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import {
  DOCKER,
  DOCKERFILE_2G,
  DOCKERFILE_512,
  dockerBuild,
  dockerEnvFor,
  dockerFacts,
  makeRunner,
  writeContext,
} from './docker.mjs';
import { interleaved as interleavedRuns, side } from './interleave.mjs';
import { loadavg, machineFacts } from './proc.mjs';
import { round, stats, summarizeCpuProfile } from './stats.mjs';

const ROOT = path.resolve(import.meta.dirname, '../..');
const MiB = 1024 * 1024;

const env = process.env;
const CLIENT_DIR = env.BENCH_CLIENT_DIR ?? path.join(ROOT, 'packages/buildkit-client');
const BKCTL = path.join(CLIENT_DIR, 'bin/bkctl.js');
/** Runs the client under test, so that another Node release can be measured on the same machine. */
const CLIENT_NODE = env.BENCH_NODE || process.execPath;
const ONLY = env.BENCH_ONLY ?? '';
const WORK = need('BENCH_WORK');
// bkctl runs as its bin, as an installed one does: sh starts the `node` found on PATH
// (bin/bkctl.js). A directory of its own makes that CLIENT_NODE whatever its file is named.
const NODE_ON_PATH = path.join(WORK, 'client-node');
fs.mkdirSync(NODE_ON_PATH, { recursive: true });
fs.rmSync(path.join(NODE_ON_PATH, 'node'), { force: true });
fs.symlinkSync(CLIENT_NODE, path.join(NODE_ON_PATH, 'node'));
env.PATH = `${NODE_ON_PATH}:${env.PATH ?? ''}`;
const OUT = need('BENCH_OUT');
const PROFILE_DIR = env.BENCH_PROFILE_DIR;
const PROFILE = env.BENCH_PROFILE ?? 'auto';
const SAMPLES = Number(env.BENCH_SAMPLES ?? 5);
const SINK_MIBPS = Number(env.BENCH_SINK_MIBPS ?? 256);
/** A run counts as taken on a busy machine when other processes used more than this share of a core. */
const BUSY_MAX = Number(env.BENCH_BUSY_MAX ?? 0.25);

function need(name) {
  const v = env[name];
  if (!v) throw new Error(`${name} is not set (run bench/run.sh)`);
  return v;
}

function log(msg) {
  process.stderr.write(`measure: ${msg}\n`);
}

/**
 * The daemons under test, each with its reference client and a timed command runner
 * (bench/lib/docker.mjs: wall, client CPU and RSS, daemon CPU as `daemonKey`, other CPU).
 * `refRun(label, ctx, output, opts)` runs the reference client's build.
 */
function dockerdTarget() {
  const sock = need('BENCH_SOCK');
  const dockerEnv = dockerEnvFor(sock, env);
  const run = makeRunner({ work: WORK, dockerdPid: Number(need('BENCH_DOCKERD_PID')), env });
  return {
    daemon: 'dockerd',
    ref: 'docker',
    addr: `docker://${sock}`,
    daemonKey: 'dockerd_cpu_s',
    run,
    dockerEnv,
    refRun: (label, ctx, output, { quiet, ...opts } = {}) =>
      run(label, dockerBuild(ctx, output, { quiet }), { envVars: dockerEnv, ...opts }),
    prune: () => housekeeping(DOCKER, ['builder', 'prune', '--all', '--force'], { env: dockerEnv }),
    refClient: `${DOCKER} build with DOCKER_BUILDKIT=1 (progress plain; -q for the stdout export)`,
  };
}

function buildkitdTarget() {
  const addr = need('BENCH_BK_ADDR');
  const buildctl = need('BENCH_BUILDCTL');
  const daemonKey = 'buildkitd_cpu_s';
  const run = makeRunner({ work: WORK, dockerdPid: Number(need('BENCH_BUILDKITD_PID')), daemonKey, env });
  return {
    daemon: 'buildkitd',
    ref: 'buildctl',
    addr,
    daemonKey,
    run,
    // The same flags as bkctlBuild: buildctl is what bkctl's command line copies.
    refRun: (label, ctx, output, { quiet, ...opts } = {}) =>
      run(label, [buildctl, '--addr', addr, ...buildArgs(ctx, output, quiet)], opts),
    prune: () => housekeeping(buildctl, ['--addr', addr, 'prune', '--all']),
    refClient: `${buildctl} --addr ${addr} build ... (progress plain; quiet for the stdout export)`,
  };
}

const TARGETS = [
  ...(ONLY === 'buildkitd' ? [] : [dockerdTarget()]),
  ...(ONLY === 'dockerd' ? [] : [buildkitdTarget()]),
];

/** The build subcommand and flags bkctl and buildctl share. */
function buildArgs(ctx, output, quiet) {
  return [
    'build',
    '--frontend',
    'dockerfile.v0',
    '--local',
    `context=${ctx}`,
    '--local',
    `dockerfile=${ctx}`,
    '--opt',
    'force-network-mode=none',
    '--output',
    output,
    '--progress',
    quiet ? 'quiet' : 'plain',
  ];
}

/** argv for bkctl with the equivalent flags; Node flags (a CPU profile) start Node directly. */
function bkctlBuild(t, ctx, output, { quiet = false, nodeFlags = [] } = {}) {
  const bin = nodeFlags.length > 0 ? [CLIENT_NODE, ...nodeFlags, BKCTL] : [BKCTL];
  return [...bin, '--addr', t.addr, ...buildArgs(ctx, output, quiet)];
}

/**
 * Interleaved runs, the reference first in each pair (bench/lib/interleave.mjs): one warm-up of
 * each side, then SAMPLES pairs; with `retryBusy`, busy pairs are retaken up to 2 x SAMPLES pairs.
 */
function interleaved(t, name, once, { retryBusy = false } = {}) {
  return interleavedRuns(name, once, {
    sides: [t.ref, 'bkctl'],
    samples: SAMPLES,
    retryBusy,
    busyMax: BUSY_MAX,
    log,
    describe: (r) =>
      `client cpu ${r.client_cpu_s}s, rss ${r.client_peak_rss_mib} MiB, ${t.daemon} cpu ${r[t.daemonKey]}s, ` +
      `other cpu ${r.other_cpu_s}s`,
  });
}

function detail(t, runs) {
  return {
    client_cpu_s: side(runs, 'client_cpu_s'),
    client_user_s: side(runs, 'client_user_s'),
    client_sys_s: side(runs, 'client_sys_s'),
    client_peak_rss_mib: side(runs, 'client_peak_rss_mib'),
    daemon_cpu_s: side(runs, t.daemonKey),
    other_cpu_s: side(runs, 'other_cpu_s'),
  };
}

/** Metric ids and titles carry the daemon unless it is dockerd (the ids results had before). */
const idFor = (t, id) => (t.daemon === 'dockerd' ? id : `${id}_${t.daemon}`);

// ---------------------------------------------------------------------------------------
// 1. Export a 512 MiB output (warm cache): reference vs bkctl, --output type=tar,dest=FILE

async function benchExport(t) {
  const name = `export-512-${t.daemon}`;
  const ctx = path.join(WORK, name);
  writeContext(ctx, DOCKERFILE_512, true);
  const dest = path.join(WORK, 'out-512.tar');
  log(`${name}: priming the cache (one ${t.ref} build)`);
  await t.refRun('prime-512', ctx, `type=tar,dest=${dest}`);
  const expectedSize = fs.statSync(dest).size;
  fs.rmSync(dest);

  const once = async (which) => {
    const out = `type=tar,dest=${dest}`;
    const r =
      which === t.ref
        ? await t.refRun(`export-${t.ref}`, ctx, out)
        : await t.run('export-bkctl', bkctlBuild(t, ctx, out));
    const size = fs.statSync(dest).size;
    fs.rmSync(dest);
    if (size !== expectedSize) throw new Error(`${which}: tar is ${size} bytes, expected ${expectedSize}`);
    r.output_bytes = size;
    return r;
  };
  const { warmup, runs, used, pairs } = await interleaved(t, name, once, { retryBusy: true });
  const d = side(runs[t.ref], 'wall_s', used[t.ref]);
  const b = side(runs.bkctl, 'wall_s', used.bkctl);
  const ratio = round(b.median / d.median, 3);
  return {
    id: idFor(t, 'export_512mib_tar'),
    daemon: t.daemon,
    reference: t.ref,
    title: `Export 512 MiB (warm cache) to a tar file, ${t.daemon}`,
    unit: 's',
    what: 'wall-clock seconds of the whole command, output type=tar,dest=FILE (same filesystem)',
    output_bytes: expectedSize,
    [t.ref]: { ...d, mib_per_s: round(expectedSize / MiB / d.median, 1), ...detail(t, used[t.ref]) },
    bkctl: { ...b, mib_per_s: round(expectedSize / MiB / b.median, 1), ...detail(t, used.bkctl) },
    pairs,
    warmup: { [t.ref]: warmup[t.ref], bkctl: warmup.bkctl },
    runs,
    ratio,
    ratio_definition: `median(bkctl) / median(${t.ref})`,
    target: { ratio_max: 1.0 },
    // Too few quiet pairs: the medians are mostly other processes' doing, so no verdict.
    pass: pairs.medians_over === 'quiet pairs' ? ratio <= 1.0 : null,
    verdict: pairs.medians_over !== 'quiet pairs' ? 'inconclusive' : ratio <= 1.0 ? 'pass' : 'fail',
    pass_at_face_value: ratio <= 1.0,
    context: ctx,
  };
}

// ---------------------------------------------------------------------------------------
// 2. Upload a 50 MB / 2,000-file context, cold (fresh random content every run, a pruned daemon)

const CTX_FILES = 2000;
const CTX_DIRS = 20;
const CTX_BYTES = 50_000_000;

function freshContext(dir) {
  const dockerfile = 'FROM scratch\nCOPY . /ctx\nFROM scratch\nCOPY --from=0 /ctx/Dockerfile /Dockerfile\n';
  writeContext(dir, dockerfile, false);
  const data = randomBytes(CTX_BYTES);
  const per = CTX_BYTES / CTX_FILES;
  for (let i = 0; i < CTX_FILES; i++) {
    const sub = path.join(dir, `d${String(i % CTX_DIRS).padStart(2, '0')}`);
    if (i < CTX_DIRS) fs.mkdirSync(sub);
    fs.writeFileSync(
      path.join(sub, `f${String(i).padStart(4, '0')}.bin`),
      data.subarray(i * per, (i + 1) * per),
    );
  }
}

/**
 * A new context of fresh content in `dir`, on a daemon that holds no earlier one, with every
 * write on disk: a cold upload for either client. Without the prune, buildctl's uploads (one
 * shared key for every directory) diff-copy onto the last one's snapshot while bkctl's (a key
 * per path) start a new one: the daemon's CPU for the same upload was 1.60 s behind buildctl,
 * 1.11 s behind bkctl (1.94 s for bkctl with one path every time); snapshots also piled up
 * 50 MB a run (bkctl 1.1 -> 1.5 s over ~40 runs). Without the sync, writeback of what came
 * before (this context, the export benchmark's tars) lands in whichever side runs next.
 */
function coldContext(t, dir) {
  t.prune();
  freshContext(dir);
  housekeeping('sync', []);
}

/** Runs an untimed command around the measurements; a failure names it and quotes its stderr. */
function housekeeping(file, args, opts = {}) {
  try {
    execFileSync(file, args, { stdio: ['ignore', 'ignore', 'pipe'], timeout: 120_000, ...opts });
  } catch (err) {
    const why = err.stderr?.toString().trim() || err.message;
    throw new Error(`${[path.basename(file), ...args].join(' ')} failed: ${why}`);
  }
}

/** bkctl/reference target of the context upload: against buildctl only (docker's CLI is another path). */
const CONTEXT_RATIO_MAX = { buildkitd: 1.2 };

async function benchContext(t) {
  let n = 0;
  const once = async (which) => {
    const ctx = path.join(WORK, `ctx-${++n}-${which}`);
    coldContext(t, ctx);
    const dest = path.join(WORK, 'out-ctx.tar');
    const out = `type=tar,dest=${dest}`;
    const r =
      which === t.ref
        ? await t.refRun(`context-${t.ref}`, ctx, out)
        : await t.run('context-bkctl', bkctlBuild(t, ctx, out));
    r.output_bytes = fs.statSync(dest).size;
    fs.rmSync(dest);
    fs.rmSync(ctx, { recursive: true });
    return r;
  };
  const { warmup, runs, used, pairs } = await interleaved(t, `context-50mb-${t.daemon}`, once, {
    retryBusy: true,
  });
  const d = side(runs[t.ref], 'wall_s', used[t.ref]);
  const b = side(runs.bkctl, 'wall_s', used.bkctl);
  const mb = CTX_BYTES / 1e6;
  const ratio = round(b.median / d.median, 3);
  const max = CONTEXT_RATIO_MAX[t.daemon];
  const quiet = pairs.medians_over === 'quiet pairs';
  return {
    id: idFor(t, 'upload_context_50mb_2000_files'),
    daemon: t.daemon,
    reference: t.ref,
    title: `Upload a 50 MB / 2,000-file context (cold: fresh random content each run, the daemon's cache pruned before it), ${t.daemon}`,
    unit: 's',
    what: 'wall-clock seconds of the whole command; the export is a tiny tar so the context transfer dominates',
    context: { files: CTX_FILES, dirs: CTX_DIRS, bytes: CTX_BYTES },
    [t.ref]: { ...d, mb_per_s: round(mb / d.median, 1), ...detail(t, used[t.ref]) },
    bkctl: { ...b, mb_per_s: round(mb / b.median, 1), ...detail(t, used.bkctl) },
    pairs,
    warmup: { [t.ref]: warmup[t.ref], bkctl: warmup.bkctl },
    runs,
    ratio,
    ratio_definition: `median(bkctl) / median(${t.ref})`,
    target: max ? { ratio_max: max } : null,
    pass: max && quiet ? ratio <= max : null,
    verdict: !max ? 'no target' : !quiet ? 'inconclusive' : ratio <= max ? 'pass' : 'fail',
    pass_at_face_value: max ? ratio <= max : null,
  };
}

/** The client's peak RSS over the 512 MiB export runs (bkctl vs the reference), from /usr/bin/time. */
function exportRss(t, ex) {
  const d = side(ex.runs[t.ref], 'client_peak_rss_mib');
  const b = side(ex.runs.bkctl, 'client_peak_rss_mib');
  const pass = b.max <= 150;
  return {
    id: idFor(t, 'peak_rss_export_512mib'),
    daemon: t.daemon,
    reference: t.ref,
    title: `Peak RSS of the client exporting 512 MiB to a file, ${t.daemon}`,
    unit: 'MiB',
    what: 'peak RSS (/usr/bin/time %M) of the client over the export runs above; median, pass on the max',
    [t.ref]: d,
    bkctl: b,
    ratio: round(b.median / d.median, 3),
    ratio_definition: `median(bkctl) / median(${t.ref}), for reference only`,
    target: { bkctl_peak_rss_mib_max: 150 },
    pass,
    verdict: pass ? 'pass' : 'fail',
  };
}

// ---------------------------------------------------------------------------------------
// 3. Peak RSS of the client while exporting 2 GiB to a slow consumer (stdout pipe)

async function benchRss(t) {
  const ctx = path.join(WORK, 'export-2g');
  writeContext(ctx, DOCKERFILE_2G, true);
  const sink = [process.execPath, path.join(ROOT, 'bench/lib/slow-sink.mjs'), String(SINK_MIBPS)];
  log('rss-2g: priming the cache (one docker build to /dev/null)');
  await t.refRun('prime-2g', ctx, 'type=tar,dest=-', { quiet: true, stdoutFile: '/dev/null' });
  const once = async (which) => {
    const r =
      which === 'docker'
        ? await t.refRun('rss-docker', ctx, 'type=tar,dest=-', { quiet: true, consumer: sink })
        : await t.run('rss-bkctl', bkctlBuild(t, ctx, 'type=tar,dest=-', { quiet: true }), {
            consumer: sink,
          });
    if (r.sink.bytes < 2 * 1024 ** 3)
      throw new Error(`${which}: only ${r.sink.bytes} bytes reached the sink`);
    return r;
  };
  // Memory, not time: background load does not disqualify a pair (and the sink's own CPU
  // counts as "other" here).
  const { warmup, runs, pairs } = await interleaved(t, 'rss-2g', once);
  const d = side(runs.docker, 'client_peak_rss_mib');
  const b = side(runs.bkctl, 'client_peak_rss_mib');
  return {
    id: 'peak_rss_2gib_slow_consumer',
    daemon: t.daemon,
    reference: t.ref,
    title: `Peak RSS of the client exporting 2 GiB to stdout, consumer throttled to ${SINK_MIBPS} MiB/s`,
    unit: 'MiB',
    what: 'peak RSS (/usr/bin/time %M) of the client process; aggregate over runs: median, pass on the max',
    sink_mib_per_s: SINK_MIBPS,
    docker: {
      ...d,
      wall_s: side(runs.docker, 'wall_s'),
      client_cpu_s: side(runs.docker, 'client_cpu_s'),
      daemon_cpu_s: side(runs.docker, 'dockerd_cpu_s'),
      other_cpu_s: side(runs.docker, 'other_cpu_s'),
      sink: runs.docker.map((r) => r.sink),
    },
    bkctl: {
      ...b,
      wall_s: side(runs.bkctl, 'wall_s'),
      client_cpu_s: side(runs.bkctl, 'client_cpu_s'),
      daemon_cpu_s: side(runs.bkctl, 'dockerd_cpu_s'),
      other_cpu_s: side(runs.bkctl, 'other_cpu_s'),
      sink: runs.bkctl.map((r) => r.sink),
    },
    pairs,
    warmup: { docker: warmup.docker, bkctl: warmup.bkctl },
    runs,
    ratio: round(b.median / d.median, 3),
    ratio_definition: 'median(bkctl) / median(docker), for reference only',
    target: { bkctl_peak_rss_mib_max: 150 },
    pass: b.max <= 150,
    verdict: b.max <= 150 ? 'pass' : 'fail',
  };
}

// ---------------------------------------------------------------------------------------
// Diagnosis: CPU profiles of one bkctl run, for the export when its target is missed and
// for the context upload when bkctl is much slower than docker there.

async function profileRun(t, name, ctx, output) {
  if (!PROFILE_DIR) return null;
  fs.mkdirSync(PROFILE_DIR, { recursive: true });
  const file = `bkctl-${name}-${t.daemon}.cpuprofile`;
  log(`profiling one bkctl ${name} run on ${t.daemon} (node --cpu-prof, into ${PROFILE_DIR})`);
  const r = await t.run(
    `${name}-bkctl-cpuprof`,
    bkctlBuild(t, ctx, output, {
      nodeFlags: ['--cpu-prof', `--cpu-prof-dir=${PROFILE_DIR}`, `--cpu-prof-name=${file}`],
    }),
  );
  const profile = path.join(PROFILE_DIR, file);
  const summary = summarizeCpuProfile(JSON.parse(fs.readFileSync(profile, 'utf8')), ROOT);
  return { profile, run: r, ...summary };
}

/**
 * Where bkctl's export time goes: the same solve through the library API into different
 * Writables (bench/lib/export-probe.mjs).
 */
async function probeExport(t, ctx) {
  const probe = path.join(ROOT, 'bench/lib/export-probe.mjs');
  const dest = path.join(WORK, 'out-512-probe.tar');
  const variants = ['file', 'file-4m', 'null'];
  const runs = Object.fromEntries(variants.map((v) => [v, []]));
  for (let round = 0; round < 3; round++) {
    for (const v of variants) {
      const r = await t.run(`probe-${v}`, [CLIENT_NODE, probe, CLIENT_DIR, t.addr, ctx, v, dest], {
        capture: true,
      });
      runs[v].push(r);
      log(`export probe ${v}: ${r.wall_s}s wall, solve ${r.output.solve_ms} ms, ${r.output.chunks} writes`);
    }
  }
  const summary = (rs) => ({
    wall_s: side(rs, 'wall_s'),
    solve_s: stats(rs.map((r) => r.output.solve_ms / 1000)),
    import_and_connect_ms: stats(rs.map((r) => r.output.import_ms + r.output.connect_ms)),
    chunks: rs[0].output.chunks,
    common_chunk_sizes: rs[0].output.common_chunk_sizes,
    client_cpu_s: side(rs, 'client_cpu_s'),
  });
  return {
    what:
      'the export solve through the library API into: file = createWriteStream(F); ' +
      'file-4m = createWriteStream(F, {highWaterMark: 4 MiB}) as bkctl does; null = a discarding Writable',
    file: summary(runs.file),
    'file-4m': summary(runs['file-4m']),
    null: summary(runs.null),
  };
}

/** The fixed cost of each client (process start, module loading, connect, one cheap call), 5 runs each. */
async function fixedCost(t) {
  const fixed = { node_start: [], node_start_no_extra_ca: [], bkctl_debug_workers: [], reference: [] };
  const noExtraCa = { ...env };
  delete noExtraCa.NODE_EXTRA_CA_CERTS;
  const refArgv =
    t.ref === 'docker' ? [DOCKER, 'version'] : [env.BENCH_BUILDCTL, '--addr', t.addr, 'debug', 'workers'];
  for (let i = 0; i < 5; i++) {
    fixed.node_start.push((await t.run('fixed-node', [CLIENT_NODE, '-e', '0'])).wall_s);
    if (env.NODE_EXTRA_CA_CERTS) {
      const r = await t.run('fixed-node-no-extra-ca', [CLIENT_NODE, '-e', '0'], { envVars: noExtraCa });
      fixed.node_start_no_extra_ca.push(r.wall_s);
    }
    fixed.bkctl_debug_workers.push(
      (await t.run('fixed-bkctl', [BKCTL, '--addr', t.addr, 'debug', 'workers'])).wall_s,
    );
    fixed.reference.push((await t.run('fixed-ref', refArgv, { envVars: t.dockerEnv })).wall_s);
  }
  const command = refArgv.slice(t.ref === 'docker' ? 1 : 3).join(' ');
  return {
    what: `wall of \`bkctl debug workers\` (node start, module load, connect, one call) vs \`${command}\`; node_start: \`node -e 0\`, also with NODE_EXTRA_CA_CERTS unset when it is set`,
    node_start: stats(fixed.node_start),
    ...(fixed.node_start_no_extra_ca.length > 0
      ? { node_start_no_extra_ca: stats(fixed.node_start_no_extra_ca) }
      : {}),
    bkctl_debug_workers: stats(fixed.bkctl_debug_workers),
    reference: stats(fixed.reference),
    reference_command: `${t.ref} ${command}`,
  };
}

async function diagnose(t, exportMetric, contextMetric) {
  const want = (m, slow) => PROFILE === 'always' || (PROFILE === 'auto' && slow(m));
  const out = { fixed_cost_s: await fixedCost(t) };
  if (want(exportMetric, (m) => m.verdict !== 'pass')) {
    const dest = path.join(WORK, 'out-512-prof.tar');
    // The upload benchmark pruned the cache this export was measured warm on.
    await t.refRun('prime-512-prof', exportMetric.context, `type=tar,dest=${dest}`);
    out.export_512mib = await profileRun(t, 'export-512', exportMetric.context, `type=tar,dest=${dest}`);
    fs.rmSync(dest, { force: true });
    out.export_512mib_probe = await probeExport(t, exportMetric.context);
  }
  // Against buildctl: whenever its target is missed; against docker (no target): when far off.
  if (want(contextMetric, (m) => (m.target ? m.verdict !== 'pass' : m.ratio > 1.5))) {
    const ctx = path.join(WORK, 'ctx-prof');
    coldContext(t, ctx);
    const dest = path.join(WORK, 'out-ctx-prof.tar');
    out.upload_context = await profileRun(t, 'context-50mb', ctx, `type=tar,dest=${dest}`);
    fs.rmSync(dest, { force: true });
    fs.rmSync(ctx, { recursive: true });
  }
  return out;
}

// ---------------------------------------------------------------------------------------

/** `buildkitd --version` of the daemon under test (the binary next to buildctl). */
function buildkitdVersion() {
  const bin = path.join(path.dirname(env.BENCH_BUILDCTL), 'buildkitd');
  return execFileSync(bin, ['--version'], { encoding: 'utf8' }).trim();
}

/** sha256 over the client's dist files (names and contents), to tell builds apart. */
function distHash() {
  const dist = path.join(CLIENT_DIR, 'dist');
  const h = createHash('sha256');
  const files = fs
    .readdirSync(dist, { recursive: true })
    .filter((f) => f.endsWith('.js') || f.endsWith('.cjs'))
    .sort();
  for (const f of files) h.update(`${f}\0`).update(fs.readFileSync(path.join(dist, f)));
  return h.digest('hex');
}

async function main() {
  const startedAt = new Date();
  fs.mkdirSync(WORK, { recursive: true });
  const dockerd = TARGETS.find((t) => t.daemon === 'dockerd');
  const buildkitd = TARGETS.find((t) => t.daemon === 'buildkitd');
  const host = {
    node: execFileSync(CLIENT_NODE, ['--version'], { encoding: 'utf8' }).trim(),
    ...(dockerd ? await dockerFacts(WORK, dockerd.dockerEnv) : {}),
    ...(buildkitd ? { buildkitd: buildkitdVersion() } : {}),
    // Node 20 reads this file at every start, before any JavaScript runs (40-70 ms for a system CA
    // bundle; Node 24 measured no difference). `fixed_cost_s` times node's start both ways.
    node_extra_ca_certs: env.NODE_EXTRA_CA_CERTS ? 'set' : 'unset',
    ...machineFacts(),
  };
  const client = {
    package: 'packages/buildkit-client',
    git_head: env.BENCH_GIT_HEAD ?? 'unknown',
    uncommitted_paths: env.BENCH_GIT_DIRTY === undefined ? null : Number(env.BENCH_GIT_DIRTY),
    dist_sha256: distHash(),
    ran_from:
      CLIENT_DIR === path.join(ROOT, 'packages/buildkit-client') ? 'checkout' : 'snapshot copied at start',
  };
  log(
    `node ${host.node}, docker ${host.docker_server ?? '-'}, buildkitd ${host.buildkitd ?? '-'}, ${host.cores} cores`,
  );

  const metrics = [];
  const timings = {};
  const diagnosis = {};
  const timed = async (name, fn) => {
    const t0 = performance.now();
    const before = loadavg();
    const metric = await fn();
    metric.loadavg = { before, after: loadavg() };
    metrics.push(metric);
    timings[name] = round((performance.now() - t0) / 1000, 1);
    return metric;
  };
  for (const t of TARGETS) {
    const ex = await timed(`export_${t.daemon}`, () => benchExport(t));
    const cx = await timed(`context_${t.daemon}`, () => benchContext(t));
    // dockerd: the 2 GiB slow-consumer run; buildkitd: the client's peak over the export runs.
    if (t.daemon === 'dockerd') await timed('rss_dockerd', () => benchRss(t));
    else metrics.push(exportRss(t, ex));
    const t0 = performance.now();
    const d = await diagnose(t, ex, cx);
    if (d) {
      diagnosis[t.daemon] = d;
      timings[`profiles_${t.daemon}`] = round((performance.now() - t0) / 1000, 1);
    }
  }

  const result = {
    benchmark: 'buildkit-client',
    date: startedAt.toISOString(),
    host,
    client,
    method: {
      timing: 'wall clock of each whole command, process start to exit, measured around the spawn',
      order: 'one warm-up of each side, then interleaved docker, bkctl, docker, bkctl, ...',
      busy_machine:
        `timing benchmarks retake a pair when other processes used > ${BUSY_MAX} of a core during ` +
        'either run (up to 2 x samples pairs); medians are over the quiet pairs when at least 3',
      samples_per_side: SAMPLES,
      reference_clients: Object.fromEntries(TARGETS.map((t) => [t.daemon, t.refClient])),
      client: `packages/buildkit-client/bin/bkctl.js --addr ADDR build ... (run as an installed bin: sh, then the node on PATH; the same flags; progress plain; quiet for the stdout export)`,
      daemons:
        'one private dockerd started by scripts/lib/dockerd.sh (no bridge; RUN steps with network none) and ' +
        'one standalone buildkitd started by scripts/lib/buildkitd.sh (OCI worker, overlayfs); each side of a ' +
        'comparison talks to the same daemon',
      client_cpu_and_rss: '/usr/bin/time -f "%e %U %S %M" around each client command',
      daemon_cpu: 'utime+stime of dockerd or buildkitd from /proc/PID/stat before and after each run',
      other_cpu:
        'machine busy CPU (/proc/stat) during the run minus client and daemon: containerd, runc, kernel, ' +
        'the sink, and any unrelated load on the machine',
    },
    metrics,
    diagnosis: Object.keys(diagnosis).length ? diagnosis : null,
    phase_seconds: timings,
    all_targets_pass: metrics.every((m) => m.verdict === 'pass' || m.verdict === 'no target'),
  };
  const tmp = `${OUT}.tmp`;
  fs.writeFileSync(tmp, `${JSON.stringify(result, null, 2)}\n`);
  fs.renameSync(tmp, OUT);
  log(`wrote ${OUT}`);
}

await main();
