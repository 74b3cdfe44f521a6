#!/usr/bin/env node
// Benchmarks the running Kiln service (API + worker + PostgreSQL + Redis + one private dockerd,
// all started by bench/service.sh) and writes the raw results as JSON. service.sh passes:
//   BENCH_SOCK, BENCH_DOCKERD_PID, BENCH_CONTAINERD_PID   the private daemon
//   BENCH_PG_PID, BENCH_REDIS_PID                          postmaster and redis-server
//   BENCH_API_PID, BENCH_WORKER_PID                        the Kiln processes service.sh started
//   BENCH_WORK, BENCH_LOG_DIR, BENCH_SPAWNED               scratch, process logs, pid files of
//                                                          processes this script (re)starts
//   BENCH_OUT, BENCH_PROFILE_DIR                           the JSON; where CPU profiles go
//   KILN_URL, KILN_TOKEN, KILN_DATA_DIR, DATABASE_URL, ... the service's own environment
// Knobs:
//   BENCH_SAMPLES        samples per side after one warm-up (default 5)
//   BENCH_AC_SECONDS     length of one autocannon run (default 10); BENCH_AC_CONNECTIONS (50)
//   BENCH_AC_SAMPLES     autocannon runs per route after a 3 s warm-up (default BENCH_SAMPLES)
//   BENCH_PROFILE        auto (CPU-profile what misses its target) | always | never
//   BENCH_BUSY_MAX       share of a core other processes may use during a timed run before its
//                        pair is retaken (default 0.25)
//
// Before every run it waits (polling every 30 s) while another benchmark (bench/run.sh,
// bench/lib/measure.mjs) is running, so that the two never share the CPU.

import { spawn } from 'node:child_process';
import { createHash, randomFillSync } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import autocannon from 'autocannon';
import pg from 'pg';
import { BUSYBOX, DOCKER, dockerBuild, dockerEnvFor, makeRunner, writeContext } from './docker.mjs';
import { interleaved, side } from './interleave.mjs';
import { findProcesses, loadavg, procMemMiB, resetPeakRss, tail, waitExit } from './proc.mjs';
import {
  CpuMeter,
  KilnApi,
  KilnProcess,
  MiB,
  startRssSampler,
  tarHeader,
  tarOf,
  workerStartedSince,
} from './service-kiln.mjs';
import { round, stats, summarizeCpuProfile } from './stats.mjs';

const ROOT = path.resolve(import.meta.dirname, '../..');
const env = process.env;

function need(name) {
  const v = env[name];
  if (!v) throw new Error(`${name} is not set (run bench/service.sh)`);
  return v;
}

const SOCK = need('BENCH_SOCK');
const WORK = need('BENCH_WORK');
const OUT = need('BENCH_OUT');
const LOG_DIR = need('BENCH_LOG_DIR');
const SPAWNED = need('BENCH_SPAWNED');
const PROFILE_DIR = env.BENCH_PROFILE_DIR;
const KILN_URL = need('KILN_URL');
const TOKEN = need('KILN_TOKEN');
const STORAGE = path.join(need('KILN_DATA_DIR'), 'objects');
const SAMPLES = Number(env.BENCH_SAMPLES ?? 5);
const AC_SECONDS = Number(env.BENCH_AC_SECONDS ?? 10);
const AC_CONNECTIONS = Number(env.BENCH_AC_CONNECTIONS ?? 50);
const AC_SAMPLES = Number(env.BENCH_AC_SAMPLES ?? SAMPLES);
const AC_WARMUP_SECONDS = 3;
const PROFILE = env.BENCH_PROFILE ?? 'auto';
const BUSY_MAX = Number(env.BENCH_BUSY_MAX ?? 0.25);
const POLL_MS = 20;

const TARGETS = {
  e2e_512mib_ratio_max: 1.1,
  e2e_tiny_overhead_max_s: 0.3,
  worker_peak_rss_max_mib: 150,
  api_peak_rss_max_mib: 150,
  get_build_rps_min: 3000,
  post_build_rps_min: 300,
};

/** Every build in this benchmark: a tar export, RUN steps without a network (no bridge here). */
const BUILD_QUERY = new URLSearchParams({ output: 'type=tar,dest=out.tar', network: 'none' }).toString();

const dockerEnv = dockerEnvFor(SOCK, env);
const run = makeRunner({ work: WORK, dockerdPid: Number(need('BENCH_DOCKERD_PID')), env });
const kiln = new KilnApi(KILN_URL, TOKEN);

function log(msg) {
  process.stderr.write(`service-measure: ${msg}\n`);
}

const procs = {
  api: new KilnProcess({
    name: 'api',
    pid: Number(need('BENCH_API_PID')),
    script: path.join(ROOT, 'apps/api/dist/main.js'),
    logFile: path.join(LOG_DIR, 'api.log'),
    spawnedDir: SPAWNED,
    env,
    ready: () => kiln.healthy(),
  }),
  worker: new KilnProcess({
    name: 'worker',
    pid: Number(need('BENCH_WORKER_PID')),
    script: path.join(ROOT, 'apps/worker/dist/main.js'),
    logFile: path.join(LOG_DIR, 'worker.log'),
    spawnedDir: SPAWNED,
    env,
    ready: (p, fromByte) => workerStartedSince(p.logFile, fromByte),
  }),
};

const meter = new CpuMeter({
  procs,
  dockerdPid: Number(need('BENCH_DOCKERD_PID')),
  containerdPid: Number(need('BENCH_CONTAINERD_PID')),
  postmasterPid: Number(need('BENCH_PG_PID')),
  redisPid: Number(need('BENCH_REDIS_PID')),
});

const nowUs = () => Number(process.hrtime.bigint() / 1000n);

// ---------------------------------------------------------------------------------------
// Never measure while another benchmark runs.

const OTHER_BENCH = /bench\/lib\/measure\.mjs|bench\/run\.sh/;
const waits = [];

async function waitForOtherBenchmarks() {
  let since = null;
  for (;;) {
    const others = findProcesses(OTHER_BENCH);
    if (others.length === 0) break;
    if (since === null) {
      since = performance.now();
      log(
        `another benchmark is running (pid ${others.map((o) => o.pid).join(', ')}: ` +
          `${others[0].cmd.slice(0, 80)}); waiting, polling every 30 s`,
      );
    }
    await sleep(30_000);
  }
  if (since !== null) {
    const s = round((performance.now() - since) / 1000, 1);
    waits.push(s);
    log(`the other benchmark has finished; resuming after ${s} s`);
  }
}

// ---------------------------------------------------------------------------------------
// Contexts

/** A context as a directory (for docker build) and as the same files in a tar (for Kiln). */
function prepareContext(name, dockerfile, { busybox = false, files = {} } = {}) {
  const dir = path.join(WORK, name);
  writeContext(dir, dockerfile, busybox);
  const entries = [{ name: 'Dockerfile', data: dockerfile }];
  if (busybox) entries.push({ name: 'busybox', data: fs.readFileSync(BUSYBOX), mode: 0o755 });
  for (const [f, data] of Object.entries(files)) {
    fs.writeFileSync(path.join(dir, f), data);
    entries.push({ name: f, data });
  }
  return { dir, tar: tarOf(entries) };
}

const DOCKERFILE_512 = [
  'FROM scratch AS b',
  'COPY busybox /bin/busybox',
  'RUN ["/bin/busybox", "dd", "if=/dev/urandom", "of=/big", "bs=1M", "count=512"]',
  'FROM scratch',
  'COPY --from=b /big /big',
  '',
].join('\n');

const DOCKERFILE_2G = [
  'FROM scratch AS b',
  'COPY busybox /bin/busybox',
  'RUN ["/bin/busybox", "dd", "if=/dev/zero", "of=/huge", "bs=1M", "count=2048"]',
  'FROM scratch',
  'COPY --from=b /huge /huge',
  '',
].join('\n');

const DOCKERFILE_TINY = 'FROM scratch\nCOPY hello.txt /hello.txt\n';
const TINY_TEXT = 'hello from the kiln service benchmark\n';

// ---------------------------------------------------------------------------------------
// One build each way

/** docker build --output type=tar,dest=FILE on the same daemon; wall clock of the whole command. */
async function dockerOnce(label, ctx) {
  const dest = path.join(WORK, `${label}.tar`);
  const s0 = meter.snapshot();
  const r = await run(label, dockerBuild(ctx.dir, `type=tar,dest=${dest}`), { envVars: dockerEnv });
  const s1 = meter.snapshot();
  const size = fs.statSync(dest).size;
  fs.rmSync(dest);
  return {
    wall_s: r.wall_s,
    output_bytes: size,
    client_peak_rss_mib: r.client_peak_rss_mib,
    ...meter.delta(s0, s1, r.client_cpu_s),
  };
}

/**
 * POST the context, then poll GET /v1/builds/:id every 20 ms until `succeeded`: wall clock from
 * just before the POST to the poll that sees it. The row's timestamps split it into phases.
 */
async function kilnOnce(label, ctx) {
  const s0 = meter.snapshot();
  const t0 = performance.now();
  const created = await kiln.createBuild(ctx.tar, BUILD_QUERY);
  const tAccepted = performance.now();
  const { view, polls } = await kiln.waitFinal(created.id, POLL_MS);
  const t1 = performance.now();
  const seenAt = Date.now();
  const s1 = meter.snapshot();
  if (view.status !== 'succeeded') {
    throw new Error(
      `${label}: build ${view.id} ended ${view.status}: ${JSON.stringify(view.error)}\n` +
        `worker log:\n${tail(procs.worker.logFile, 10)}`,
    );
  }
  const at = (x) => Date.parse(x);
  // Big artifacts go at once (disk); small ones stay, so the GET benchmark reads a complete build.
  if (view.artifact.size > MiB) {
    fs.rmSync(path.join(STORAGE, 'artifacts', view.id), { recursive: true, force: true });
  }
  return {
    wall_s: round((t1 - t0) / 1000, 3),
    build_id: view.id,
    output_bytes: view.artifact.size,
    // Client side: the POST (upload, validation, store, insert, enqueue) until its 202.
    post_s: round((tAccepted - t0) / 1000, 3),
    // Server side, from the row: created → a worker marked it running (rest of the POST,
    // enqueue, pick-up, builder lease) → finished (context fetch and extract, solve, export,
    // storing the artifact, the final update) → seen by the poller.
    queued_s: round((at(view.startedAt) - at(view.createdAt)) / 1000, 3),
    running_s: round((at(view.finishedAt) - at(view.startedAt)) / 1000, 3),
    seen_after_finish_s: round((seenAt - at(view.finishedAt)) / 1000, 3),
    polls,
    ...meter.delta(s0, s1),
  };
}

const CPU_KEYS = [
  'api_cpu_s',
  'worker_cpu_s',
  'dockerd_cpu_s',
  'containerd_cpu_s',
  'postgres_cpu_s',
  'redis_cpu_s',
  'bench_cpu_s',
  'client_cpu_s',
  'other_cpu_s',
];

/** Median (and samples) of every CPU figure over `runs`. */
function cpuDetail(runs, used = runs) {
  return Object.fromEntries(
    CPU_KEYS.filter((k) => runs.every((r) => typeof r[k] === 'number')).map((k) => [k, side(runs, k, used)]),
  );
}

const describeRun = (r) =>
  [
    r.post_s !== undefined
      ? `post ${r.post_s}s, queued ${r.queued_s}s, running ${r.running_s}s, seen +${r.seen_after_finish_s}s`
      : null,
    `cpu: api ${r.api_cpu_s}, worker ${r.worker_cpu_s}, dockerd ${r.dockerd_cpu_s}, pg ${r.postgres_cpu_s}, ` +
      `client ${r.client_cpu_s}, bench ${r.bench_cpu_s}, other ${r.other_cpu_s}`,
  ]
    .filter(Boolean)
    .join('; ');

// ---------------------------------------------------------------------------------------
// 1. End to end: POST → artifact stored, vs docker build --output type=tar

async function benchE2E({ id, title, name, dockerfile, ctxOpts, judge }) {
  const ctx = prepareContext(name, dockerfile, ctxOpts);
  const once = (s, i) =>
    s === 'docker' ? dockerOnce(`${name}-docker-${i}`, ctx) : kilnOnce(`${name}-kiln-${i}`, ctx);
  const { warmup, runs, used, pairs } = await interleaved(id, once, {
    sides: ['docker', 'kiln'],
    samples: SAMPLES,
    retryBusy: true,
    busyMax: BUSY_MAX,
    log,
    describe: describeRun,
    beforeRun: waitForOtherBenchmarks,
  });
  const sizes = new Set([...runs.docker, ...runs.kiln].map((r) => r.output_bytes));
  const d = side(runs.docker, 'wall_s', used.docker);
  const k = side(runs.kiln, 'wall_s', used.kiln);
  const phases = Object.fromEntries(
    ['post_s', 'queued_s', 'running_s', 'seen_after_finish_s', 'polls'].map((p) => [
      p,
      side(runs.kiln, p, used.kiln),
    ]),
  );
  const ratio = round(k.median / d.median, 3);
  const overhead = round(k.median - d.median, 3);
  const pass = judge({ ratio, overhead });
  return {
    id,
    title,
    unit: 's',
    what:
      'wall-clock seconds: docker = the whole `docker build --output type=tar,dest=FILE` command; ' +
      'kiln = from just before POST /v1/builds to the GET poll (every 20 ms) that sees `succeeded` ' +
      '(artifact stored in local storage)',
    output_bytes: [...sizes],
    docker: { ...d, ...cpuDetail(runs.docker, used.docker) },
    kiln: { ...k, ...cpuDetail(runs.kiln, used.kiln), phases },
    pairs,
    warmup,
    runs,
    ratio,
    ratio_definition: 'median(kiln) / median(docker)',
    overhead_s: overhead,
    overhead_definition: 'median(kiln) - median(docker)',
    pass,
    verdict: pass ? 'pass' : 'fail',
    busy_machine: pairs.medians_over !== 'quiet pairs',
    context: ctx.dir,
  };
}

const benchTiny = () =>
  benchE2E({
    id: 'e2e_tiny',
    title: 'End to end, tiny build (one small COPY, warm)',
    name: 'tiny',
    dockerfile: DOCKERFILE_TINY,
    ctxOpts: { files: { 'hello.txt': TINY_TEXT } },
    judge: ({ overhead }) => overhead <= TARGETS.e2e_tiny_overhead_max_s,
  }).then((m) => ({ ...m, target: { overhead_max_s: TARGETS.e2e_tiny_overhead_max_s } }));

const bench512 = () =>
  benchE2E({
    id: 'e2e_512mib',
    title: 'End to end, 512 MiB output (warm cache)',
    name: 'big512',
    dockerfile: DOCKERFILE_512,
    ctxOpts: { busybox: true },
    judge: ({ ratio }) => ratio <= TARGETS.e2e_512mib_ratio_max,
  }).then((m) => ({ ...m, target: { ratio_max: TARGETS.e2e_512mib_ratio_max } }));

// ---------------------------------------------------------------------------------------
// 2a. Peak RSS of the worker exporting 2 GiB into storage

/** Runs `fn` while sampling PID's RSS every 50 ms, with its peak (VmHWM) reset first. */
async function withPeakRss(pid, fn) {
  const reset = resetPeakRss(pid);
  const before = procMemMiB(pid);
  const sampler = startRssSampler(pid, 50);
  const r = await fn();
  const sampled = sampler.stop();
  const after = procMemMiB(pid);
  return Object.assign(r, {
    rss_before_mib: before.rss,
    vmhwm_mib: after.hwm,
    vmhwm_reset: reset,
    sampled_rss: sampled,
    // VmHWM covers every page ever resident, between the 50 ms samples too; without a reset
    // it would be the process's lifetime peak, so then only the samples count.
    peak_rss_mib: reset ? after.hwm : sampled.max_mib,
  });
}

async function benchWorkerRss() {
  const ctx = prepareContext('rss2g', DOCKERFILE_2G, { busybox: true });
  const runs = [];
  let warmup;
  for (let i = 0; i <= SAMPLES; i++) {
    await waitForOtherBenchmarks();
    const r = await withPeakRss(procs.worker.pid, () => kilnOnce(`rss-worker-${i}`, ctx));
    r.mib_per_s_running = round(r.output_bytes / MiB / r.running_s, 1);
    log(
      `worker-rss-2g: ${i === 0 ? 'warm-up' : `#${i}`} peak ${r.peak_rss_mib} MiB (before ${r.rss_before_mib}, ` +
        `sampled max ${r.sampled_rss.max_mib}), ${r.wall_s}s; ${describeRun(r)}`,
    );
    if (i === 0) warmup = r;
    else runs.push(r);
  }
  const peak = side(runs, 'peak_rss_mib');
  const pass = peak.max <= TARGETS.worker_peak_rss_max_mib;
  return {
    id: 'worker_peak_rss_2gib',
    title: 'Peak RSS of the worker while exporting 2 GiB into storage',
    unit: 'MiB',
    what:
      'VmHWM of the worker process (/proc/PID/status, peak reset through /proc/PID/clear_refs before each ' +
      'build), cross-checked by sampling VmRSS every 50 ms; the build is a warm-cache COPY of a 2 GiB ' +
      'file (dd from /dev/zero) exported as a tar into local storage; pass on the max of the runs',
    peak_rss_mib: peak,
    rss_before_mib: side(runs, 'rss_before_mib'),
    sampled_max_mib: stats(runs.map((r) => r.sampled_rss.max_mib)),
    wall_s: side(runs, 'wall_s'),
    running_s: side(runs, 'running_s'),
    mib_per_s_running: side(runs, 'mib_per_s_running'),
    ...cpuDetail(runs),
    output_bytes: runs[0]?.output_bytes,
    warmup,
    runs,
    target: { peak_rss_max_mib: TARGETS.worker_peak_rss_max_mib },
    pass,
    verdict: pass ? 'pass' : 'fail',
  };
}

// ---------------------------------------------------------------------------------------
// 2b. Peak RSS of the API receiving a 1 GiB context

const GiB = 1024 * MiB;

/** A 1 GiB random (incompressible) file plus a Dockerfile whose comment makes each run's digest new. */
function writeBigContext(file) {
  const dockerfile = Buffer.from('FROM scratch\nCOPY Dockerfile /Dockerfile\n# upload 000000\n');
  const fd = fs.openSync(file, 'w');
  try {
    fs.writeSync(fd, tarHeader('Dockerfile', dockerfile.length));
    fs.writeSync(fd, Buffer.concat([dockerfile, Buffer.alloc((512 - (dockerfile.length % 512)) % 512)]));
    fs.writeSync(fd, tarHeader('big.bin', GiB));
    const chunk = Buffer.allocUnsafe(16 * MiB);
    for (let done = 0; done < GiB; done += chunk.length) {
      randomFillSync(chunk);
      fs.writeSync(fd, chunk);
    }
    fs.writeSync(fd, Buffer.alloc(1024));
  } finally {
    fs.closeSync(fd);
  }
  return { markerOffset: 512 + dockerfile.indexOf('000000'), size: fs.statSync(file).size };
}

async function uploadOnce(file, markerOffset, i) {
  const fd = fs.openSync(file, 'r+');
  fs.writeSync(fd, Buffer.from(String(i).padStart(6, '0')), 0, 6, markerOffset);
  fs.closeSync(fd);
  const resp = path.join(WORK, `upload-${i}.json`);
  const s0 = meter.snapshot();
  const r = await run(
    `upload-${i}`,
    [
      'curl',
      '-sS',
      '-o',
      resp,
      '-w',
      '{"http_code":%{http_code},"time_total":%{time_total},"speed_upload":%{speed_upload}}\\n',
      '-H',
      `authorization: Bearer ${TOKEN}`,
      '-H',
      'content-type: application/x-tar',
      '-H',
      'Expect:',
      '-X',
      'POST',
      '-T',
      file,
      `${KILN_URL}/v1/builds?${BUILD_QUERY}`,
    ],
    { capture: true },
  );
  const s1 = meter.snapshot();
  const body = JSON.parse(fs.readFileSync(resp, 'utf8'));
  fs.rmSync(resp);
  if (r.output.http_code !== 202)
    throw new Error(`upload ${i}: HTTP ${r.output.http_code} ${JSON.stringify(body)}`);
  // The worker is stopped: the build stays queued. Cancel it and drop the stored 1 GiB context.
  await kiln.cancel(body.id);
  const digest = body.context.digest.replace(/^sha256:/, '');
  fs.rmSync(path.join(STORAGE, 'contexts', 'sha256', `${digest}.tar`), { force: true });
  return {
    wall_s: r.wall_s,
    build_id: body.id,
    context_bytes: body.context.size,
    mib_per_s: round(body.context.size / MiB / r.wall_s, 1),
    curl_peak_rss_mib: r.client_peak_rss_mib,
    ...meter.delta(s0, s1, r.client_cpu_s),
  };
}

async function benchApiRss() {
  const file = path.join(WORK, 'ctx-1g.tar');
  const t0 = performance.now();
  const { markerOffset, size } = writeBigContext(file);
  log(
    `api-rss-1g: wrote a ${round(size / MiB, 1)} MiB random tar in ${round((performance.now() - t0) / 1000, 1)} s`,
  );
  const runs = [];
  let warmup;
  for (let i = 0; i <= SAMPLES; i++) {
    await waitForOtherBenchmarks();
    const r = await withPeakRss(procs.api.pid, () => uploadOnce(file, markerOffset, i));
    log(
      `api-rss-1g: ${i === 0 ? 'warm-up' : `#${i}`} peak ${r.peak_rss_mib} MiB (before ${r.rss_before_mib}, ` +
        `sampled max ${r.sampled_rss.max_mib}), ${r.wall_s}s = ${r.mib_per_s} MiB/s; ${describeRun(r)}`,
    );
    if (i === 0) warmup = r;
    else runs.push(r);
  }
  fs.rmSync(file);
  const peak = side(runs, 'peak_rss_mib');
  const pass = peak.max <= TARGETS.api_peak_rss_max_mib;
  return {
    id: 'api_peak_rss_1gib_upload',
    title: 'Peak RSS of the API while receiving a 1 GiB context',
    unit: 'MiB',
    what:
      'VmHWM of the API process (peak reset through /proc/PID/clear_refs before each upload), cross-checked ' +
      'by sampling VmRSS every 50 ms; the body is a raw tar (Dockerfile + 1 GiB of random bytes) sent by ' +
      '`curl -T FILE -X POST` with Content-Length; each run changes a byte so the digest is new and the ' +
      'context is stored again; pass on the max of the runs',
    context_bytes: size,
    peak_rss_mib: peak,
    rss_before_mib: side(runs, 'rss_before_mib'),
    sampled_max_mib: stats(runs.map((r) => r.sampled_rss.max_mib)),
    wall_s: side(runs, 'wall_s'),
    mib_per_s: side(runs, 'mib_per_s'),
    ...cpuDetail(runs),
    warmup,
    runs,
    target: { peak_rss_max_mib: TARGETS.api_peak_rss_max_mib },
    pass,
    verdict: pass ? 'pass' : 'fail',
  };
}

// ---------------------------------------------------------------------------------------
// 3. autocannon against the API

function autocannonRun(opts) {
  return new Promise((resolve, reject) => {
    autocannon(opts, (err, result) => (err ? reject(err) : resolve(result)));
  });
}

async function countBuilds(db) {
  const { rows } = await db.query('SELECT count(*)::int AS n FROM "Build"');
  return rows[0].n;
}

function acOptions(route, ctx) {
  const headers = { authorization: `Bearer ${TOKEN}` };
  if (route === 'get') return { url: `${KILN_URL}/v1/builds/${ctx.finishedId}`, method: 'GET', headers };
  return {
    url: `${KILN_URL}/v1/builds?${BUILD_QUERY}`,
    method: 'POST',
    headers: { ...headers, 'content-type': 'application/x-tar' },
    body: ctx.smallTar,
  };
}

async function acOnce(route, ctx, seconds) {
  const before = route === 'post' ? await countBuilds(ctx.db) : null;
  const s0 = meter.snapshot();
  const res = await autocannonRun({
    ...acOptions(route, ctx),
    connections: AC_CONNECTIONS,
    duration: seconds,
  });
  const s1 = meter.snapshot();
  const after = route === 'post' ? await countBuilds(ctx.db) : null;
  const ok = res['2xx'];
  return {
    wall_s: round(res.duration, 2),
    ok_rps: round(ok / res.duration, 1),
    rps_avg: res.requests.average,
    requests: res.requests.total,
    ok_responses: ok,
    non_2xx: res.non2xx,
    errors: res.errors,
    timeouts: res.timeouts,
    latency_ms: {
      p50: res.latency.p50,
      p90: res.latency.p90,
      p99: res.latency.p99,
      max: res.latency.max,
      mean: res.latency.average,
    },
    throughput_mib_s: round(res.throughput.average / MiB, 2),
    ...(route === 'post' ? { builds_created: after - before } : {}),
    ...meter.delta(s0, s1),
  };
}

async function benchAutocannon(ctx) {
  const runs = { get: [], post: [] };
  const warmup = {};
  for (const route of ['get', 'post']) {
    await waitForOtherBenchmarks();
    warmup[route] = await acOnce(route, ctx, AC_WARMUP_SECONDS);
    log(`autocannon ${route}: warm-up ${warmup[route].ok_rps} req/s`);
  }
  for (let i = 1; i <= AC_SAMPLES; i++) {
    for (const route of ['get', 'post']) {
      await waitForOtherBenchmarks();
      const r = await acOnce(route, ctx, AC_SECONDS);
      runs[route].push(r);
      log(
        `autocannon ${route} #${i}: ${r.ok_rps} req/s (p50 ${r.latency_ms.p50} ms, p99 ${r.latency_ms.p99} ms, ` +
          `non-2xx ${r.non_2xx}, errors ${r.errors}${route === 'post' ? `, builds created ${r.builds_created}` : ''}); ` +
          describeRun(r),
      );
    }
  }
  const metric = (route) => {
    const rs = runs[route];
    const rps = side(rs, 'ok_rps');
    const min = route === 'get' ? TARGETS.get_build_rps_min : TARGETS.post_build_rps_min;
    const pass = rps.median >= min;
    return {
      id: route === 'get' ? 'get_build_rps' : 'post_build_rps',
      title:
        route === 'get'
          ? `GET /v1/builds/:id of a finished build, ${AC_CONNECTIONS} connections`
          : `POST /v1/builds with a ${ctx.smallTar.length}-byte tar context, ${AC_CONNECTIONS} connections, worker stopped`,
      unit: 'req/s',
      what:
        `autocannon (programmatic, in the benchmark process, loopback) for ${AC_SECONDS} s per run, ` +
        `${AC_CONNECTIONS} connections, no pipelining; req/s = 2xx responses / duration; latency percentiles ` +
        'of all responses in ms; pass on the median run',
      ok_rps: rps,
      latency_p50_ms: side(
        rs.map((r) => ({ v: r.latency_ms.p50 })),
        'v',
      ),
      latency_p99_ms: side(
        rs.map((r) => ({ v: r.latency_ms.p99 })),
        'v',
      ),
      non_2xx: rs.reduce((a, r) => a + r.non_2xx, 0),
      errors: rs.reduce((a, r) => a + r.errors, 0),
      timeouts: rs.reduce((a, r) => a + r.timeouts, 0),
      ...(route === 'post'
        ? {
            builds_created: rs.reduce((a, r) => a + r.builds_created, 0) + warmup.post.builds_created,
            builds_created_per_run: rs.map((r) => r.builds_created),
          }
        : { build_id: ctx.finishedId }),
      ...cpuDetail(rs),
      warmup: warmup[route],
      runs: rs,
      target: { rps_min: min },
      pass,
      verdict: pass ? 'pass' : 'fail',
    };
  };
  return [metric('get'), metric('post')];
}

// ---------------------------------------------------------------------------------------
// Diagnosis: CPU profiles (node --cpu-prof) of the API or worker over the load that missed

const CATEGORIES = [
  ['idle', /^\(idle\)$/],
  ['garbage collector', /^\(garbage collector\)$/],
  ['V8/native, unattributed ((program))', /^\(program\)$/],
  ['logging (pino)', /node_modules\/(pino|sonic-boom|fast-redact|thread-stream|pino-std-serializers)\//],
  [
    'Prisma client',
    /(node_modules\/@prisma\/|node_modules\/\.prisma\/|\/generated\/|node_modules\/prisma\/)/,
  ],
  ['pg driver', /node_modules\/(pg|pg-protocol|pg-pool|pg-types|postgres-)/],
  [
    'Fastify and plugins',
    /node_modules\/(fastify|@fastify|find-my-way|avvio|light-my-request|fast-json-stringify|ajv|fast-querystring)/,
  ],
  ['Redis / BullMQ', /node_modules\/(ioredis|bullmq|@ioredis|redis-parser|msgpackr)/],
  ['gRPC / protobuf', /node_modules\/(@grpc|protobufjs|@protobufjs)/],
  ['Kiln code (apps/, packages/)', /^(apps|packages)\//],
  ['other npm packages', /node_modules\//],
  ['Node.js core (node:...)', /^node:/],
  ['native bindings (fs, crypto, zlib, ...)', /^[a-zA-Z_$][\w$]*$/],
];

function categorize(files) {
  const out = new Map();
  for (const f of files) {
    const cat = CATEGORIES.find(([, re]) => re.test(f.name))?.[0] ?? 'other';
    out.set(cat, (out.get(cat) ?? 0) + f.self_ms);
  }
  const total = [...out.values()].reduce((a, b) => a + b, 0);
  return [...out]
    .sort((a, b) => b[1] - a[1])
    .map(([category, ms]) => ({ category, self_ms: round(ms, 1), pct: round((100 * ms) / total, 1) }));
}

/**
 * Restarts the processes named in the workloads with --cpu-prof, runs each workload (a timed
 * window), stops the processes (which writes the profiles) and summarizes, per workload and
 * process, the samples inside its window; then starts the processes again unless told not to.
 * `workloads`: [{key, what, procs: ['api', 'worker'], fn}] → results keyed `${key}_${proc}`.
 */
async function profileWorkloads(workloads, { restartAfter = true } = {}) {
  if (!PROFILE_DIR || workloads.length === 0) return {};
  fs.mkdirSync(PROFILE_DIR, { recursive: true });
  const names = [...new Set(workloads.flatMap((w) => w.procs))];
  const stamp = Date.now();
  const files = {};
  for (const n of names) {
    files[n] = path.join(PROFILE_DIR, `${n}-${stamp}.cpuprofile`);
    log(`restarting the ${n} with --cpu-prof (into ${PROFILE_DIR})`);
    await procs[n].restart([
      '--cpu-prof',
      `--cpu-prof-dir=${PROFILE_DIR}`,
      `--cpu-prof-name=${path.basename(files[n])}`,
    ]);
  }
  const windows = [];
  for (const w of workloads) {
    await waitForOtherBenchmarks();
    const s0 = meter.snapshot();
    const fromUs = nowUs();
    const load = await w.fn();
    const toUs = nowUs();
    const s1 = meter.snapshot();
    windows.push({ ...w, window: { fromUs, toUs }, load, cpu: meter.delta(s0, s1) });
    log(`profiled ${w.key}: ${round((toUs - fromUs) / 1e6, 1)} s`);
  }
  for (const n of names) await procs[n].stop();
  const profiles = Object.fromEntries(names.map((n) => [n, JSON.parse(fs.readFileSync(files[n], 'utf8'))]));
  const out = {};
  for (const w of windows) {
    for (const n of w.procs) {
      out[`${w.key}_${n}`] = {
        what: `the ${n} during ${w.what}`,
        process: n,
        profile: files[n],
        window_s: round((w.window.toUs - w.window.fromUs) / 1e6, 2),
        process_cpu_s: w.cpu[`${n}_cpu_s`],
        cpu: w.cpu,
        load: w.load,
        ...summarizeCpuProfile(profiles[n], ROOT, 15, w.window),
        categories: categorize(
          summarizeCpuProfile(profiles[n], ROOT, Number.POSITIVE_INFINITY, w.window).top_self_files,
        ),
      };
    }
  }
  if (restartAfter) for (const n of names) await procs[n].start();
  return out;
}

// ---------------------------------------------------------------------------------------

function gitInfo() {
  const head = env.BENCH_GIT_HEAD ?? 'unknown';
  const dirty = env.BENCH_GIT_DIRTY === undefined ? null : Number(env.BENCH_GIT_DIRTY);
  const h = createHash('sha256');
  for (const dir of [
    'apps/api/dist',
    'apps/worker/dist',
    'packages/core/dist',
    'packages/buildkit-client/dist',
  ]) {
    const abs = path.join(ROOT, dir);
    if (!fs.existsSync(abs)) continue;
    for (const f of fs
      .readdirSync(abs, { recursive: true })
      .filter((x) => x.endsWith('.js'))
      .sort()) {
      h.update(`${dir}/${f}\0`).update(fs.readFileSync(path.join(abs, f)));
    }
  }
  return { git_head: head, uncommitted_paths: dirty, dist_sha256: h.digest('hex') };
}

async function hostInfo() {
  const version = async (args) => {
    const file = path.join(WORK, 'version.txt');
    const fd = fs.openSync(file, 'w');
    const child = spawn(DOCKER, args, { env: dockerEnv, stdio: ['ignore', fd, 'ignore'] });
    await waitExit(child);
    fs.closeSync(fd);
    return fs.readFileSync(file, 'utf8').trim();
  };
  const pgVersion = await (async () => {
    const db = new pg.Client({ connectionString: env.DATABASE_URL });
    await db.connect();
    try {
      return (await db.query('SHOW server_version')).rows[0].server_version;
    } finally {
      await db.end();
    }
  })();
  return {
    node: process.version,
    docker_client: await version(['version', '--format', '{{.Client.Version}}']),
    docker_server: await version(['version', '--format', '{{.Server.Version}}']),
    storage_driver: await version(['info', '--format', '{{.Driver}}']),
    postgres: pgVersion,
    cores: os.cpus().length,
    cpu_model: os.cpus()[0]?.model ?? 'unknown',
    mem_total_mib: Math.round(os.totalmem() / MiB),
    kernel: os.release(),
    loadavg_at_start: loadavg(),
  };
}

async function main() {
  const startedAt = new Date();
  fs.mkdirSync(WORK, { recursive: true });
  await waitForOtherBenchmarks();
  const host = await hostInfo();
  log(`node ${host.node}, docker ${host.docker_server}, postgres ${host.postgres}, ${host.cores} cores`);
  const timings = {};
  const metrics = [];
  const diagnosis = {};
  const timed = async (name, fn) => {
    const t0 = performance.now();
    const before = loadavg();
    const waited0 = waits.reduce((a, b) => a + b, 0);
    const out = await fn();
    timings[name] = round((performance.now() - t0) / 1000, 1);
    const waited = round(waits.reduce((a, b) => a + b, 0) - waited0, 1);
    if (waited) timings[`${name}_waiting_for_other_benchmark`] = waited;
    for (const m of Array.isArray(out) ? out : out ? [out] : []) {
      if (m.id) {
        m.loadavg = { before, after: loadavg() };
        metrics.push(m);
      }
    }
    return out;
  };
  const want = (m) => PROFILE === 'always' || (PROFILE === 'auto' && m.verdict !== 'pass');

  try {
    // Phase A: API + worker running.
    const tiny = await timed('e2e_tiny', benchTiny);
    const big = await timed('e2e_512mib', bench512);
    const wrss = await timed('worker_rss', benchWorkerRss);

    const loadsA = [];
    if (want(tiny)) {
      const ctx = prepareContext('tiny', DOCKERFILE_TINY, { files: { 'hello.txt': TINY_TEXT } });
      loadsA.push({
        key: 'e2e_tiny',
        what: '8 tiny end-to-end builds (POST, then GET every 20 ms)',
        procs: ['api', 'worker'],
        fn: async () => {
          const rs = [];
          for (let i = 0; i < 8; i++) rs.push((await kilnOnce(`prof-tiny-${i}`, ctx)).wall_s);
          return { wall_s: rs };
        },
      });
    }
    if (want(big)) {
      const ctx = prepareContext('big512', DOCKERFILE_512, { busybox: true });
      loadsA.push({
        key: 'e2e_512mib',
        what: '3 end-to-end 512 MiB builds',
        procs: ['worker'],
        fn: async () => {
          const rs = [];
          for (let i = 0; i < 3; i++) rs.push((await kilnOnce(`prof-512-${i}`, ctx)).wall_s);
          return { wall_s: rs };
        },
      });
    }
    if (want(wrss)) {
      const ctx = prepareContext('rss2g', DOCKERFILE_2G, { busybox: true });
      loadsA.push({
        key: 'worker_rss_2gib',
        what: 'one 2 GiB export',
        procs: ['worker'],
        fn: async () => ({ wall_s: (await kilnOnce('prof-2g', ctx)).wall_s }),
      });
    }
    if (loadsA.length) {
      await timed('profiles_phase_a', async () => {
        Object.assign(diagnosis, await profileWorkloads(loadsA));
      });
    }

    // Phase B: the worker stopped (builds stay queued; dockerd idle).
    log('stopping the worker: uploads and POSTs below stay queued');
    await procs.worker.stop();
    const db = new pg.Client({ connectionString: env.DATABASE_URL });
    await db.connect();
    try {
      const arss = await timed('api_rss', benchApiRss);
      const smallTar = tarOf([
        { name: 'Dockerfile', data: 'FROM scratch\nCOPY filler.bin /filler.bin\n' },
        { name: 'filler.bin', data: Buffer.alloc(7680, 'k') },
      ]);
      const acCtx = { db, smallTar, finishedId: tiny.runs.kiln.at(-1).build_id };
      const [get, post] = await timed('autocannon', () => benchAutocannon(acCtx));

      const loads = [];
      if (want(get)) {
        loads.push({
          key: 'get_build',
          what: `one ${AC_SECONDS} s autocannon GET /v1/builds/:id run`,
          procs: ['api'],
          fn: () => acOnce('get', acCtx, AC_SECONDS),
        });
      }
      if (want(post)) {
        loads.push({
          key: 'post_build',
          what: `one ${AC_SECONDS} s autocannon POST /v1/builds run`,
          procs: ['api'],
          fn: () => acOnce('post', acCtx, AC_SECONDS),
        });
      }
      if (want(arss)) {
        const file = path.join(WORK, 'ctx-1g-prof.tar');
        loads.push({
          key: 'api_rss_upload',
          what: 'one 1 GiB upload',
          procs: ['api'],
          fn: async () => {
            const { markerOffset } = writeBigContext(file);
            const r = await uploadOnce(file, markerOffset, 999);
            fs.rmSync(file);
            return r;
          },
        });
      }
      if (loads.length) {
        await timed('profiles_phase_b', async () => {
          Object.assign(diagnosis, await profileWorkloads(loads, { restartAfter: false }));
        });
      }
    } finally {
      await db.end();
    }
  } finally {
    // Processes this script started; service.sh stops the rest (and these, should this fail).
    for (const p of Object.values(procs)) if (p.child) await p.stop().catch(() => {});
  }

  const result = {
    benchmark: 'service',
    date: startedAt.toISOString(),
    host,
    kiln: {
      ...gitInfo(),
      log_level: env.KILN_LOG_LEVEL ?? 'info',
      worker_concurrency: Number(env.KILN_WORKER_CONCURRENCY ?? 4),
      builder: `docker://${SOCK}`,
      storage: 'local directory (KILN_DATA_DIR/objects)',
      max_context_bytes: Number(env.KILN_MAX_CONTEXT_BYTES),
    },
    method: {
      samples_per_side: SAMPLES,
      order:
        'one warm-up of each side, then interleaved docker, kiln, docker, kiln, ... on the same dockerd; ' +
        'peak-RSS benchmarks: one warm-up, then samples; autocannon: a 3 s warm-up per route, then GET and ' +
        'POST runs alternating',
      busy_machine:
        `end-to-end benchmarks retake a pair when other processes used > ${BUSY_MAX} of a core during either ` +
        'run (up to 2 x samples pairs); medians are over the quiet pairs when at least 3, else over all',
      reference: `${DOCKER} build --network=none --progress=plain --output type=tar,dest=FILE DIR (DOCKER_BUILDKIT=1)`,
      kiln: `POST /v1/builds?${BUILD_QUERY} (raw tar body, node fetch), then GET /v1/builds/:id every ${POLL_MS} ms`,
      cpu:
        'utime+stime from /proc/PID/stat before and after each run for the API, worker, dockerd, containerd, ' +
        'PostgreSQL (postmaster + backends + exited children), redis-server, this benchmark process ' +
        '(autocannon and the poller run in it) and the measured command (docker CLI, curl; /usr/bin/time); ' +
        'other = machine busy time (/proc/stat) minus all of those',
      other_benchmarks: 'before every run, waits (polling every 30 s) while bench/run.sh or measure.mjs runs',
    },
    targets: TARGETS,
    metrics,
    diagnosis: Object.keys(diagnosis).length ? diagnosis : null,
    waited_for_other_benchmark_s: waits,
    phase_seconds: timings,
    all_targets_pass: metrics.every((m) => m.verdict === 'pass'),
  };
  const tmp = `${OUT}.tmp`;
  fs.writeFileSync(tmp, `${JSON.stringify(result, null, 2)}\n`);
  fs.renameSync(tmp, OUT);
  log(`wrote ${OUT}`);
}

await main();
