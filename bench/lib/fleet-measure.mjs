// One run of the fleet benchmark (bench/fleet.sh starts the service around it): creates
// projects through the operator API, submits BENCH_BUILDS sleep-dominated builds spread over
// them, waits until PostgreSQL has them all final, checks them (fleet-check.mjs) and adds this
// run to BENCH_OUT. Exits 1 when a build is missing, duplicated or not succeeded exactly once.

import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';
import pg from 'pg';
import { BUSYBOX } from './docker.mjs';
import { checkRun, fetchRun } from './fleet-check.mjs';
import {
  loadavg,
  machineBusySeconds,
  machineFacts,
  procCpuSecondsOr0,
  procMemMiB,
  resetPeakRss,
} from './proc.mjs';
import { KilnApi, tarOf } from './service-kiln.mjs';
import { round } from './stats.mjs';

const env = (name, fallback) => {
  const v = process.env[name] ?? fallback;
  if (v === undefined) throw new Error(`${name} is not set`);
  return v;
};
const BUILDERS = Number(env('BENCH_BUILDERS'));
const BUILDS = Number(env('BENCH_BUILDS', '200'));
const PROJECTS = Number(env('BENCH_PROJECTS', '4'));
const SLEEP_S = Number(env('BENCH_SLEEP_S', '2'));
const POST_CONCURRENCY = Number(env('BENCH_POST_CONCURRENCY', '4'));
const URL = env('KILN_PUBLIC_URL');
const OUT = env('BENCH_OUT');
const DATA_DIR = env('KILN_DATA_DIR');
const API_PID = Number(env('BENCH_API_PID'));
const WORKER_PIDS = env('BENCH_WORKER_PIDS').split(',').filter(Boolean).map(Number);
const BUILDKITD_PIDS = env('BENCH_BUILDKITD_PIDS').split(',').filter(Boolean).map(Number);
const FINAL = ['succeeded', 'failed', 'canceled', 'expired'];

const log = (msg) => process.stderr.write(`fleet: ${msg}\n`);

// A RUN that mostly waits, with the build arg in its environment (so in its cache key: no
// builder's cache and no result cache can answer it); only its small output is exported.
const DOCKERFILE = `FROM scratch AS run
COPY busybox /bin/busybox
ARG FLEET_NONCE
RUN ["/bin/busybox", "sh", "-c", "/bin/busybox sleep ${SLEEP_S} && echo $FLEET_NONCE > /nonce"]
FROM scratch
COPY --from=run /nonce /nonce
`;
const CONTEXT = tarOf([
  { name: 'Dockerfile', data: DOCKERFILE },
  { name: 'busybox', data: fs.readFileSync(BUSYBOX), mode: 0o755 },
]);

async function createProjects(label) {
  const operator = new KilnApi(URL, env('KILN_OPERATOR_TOKEN'));
  const projects = [];
  for (let p = 1; p <= PROJECTS; p++) {
    const name = `fleet${label}-p${p}`;
    const project = await operator.json('POST', '/v1/admin/projects', {
      body: JSON.stringify({ name }),
      headers: { 'content-type': 'application/json' },
      expect: [201],
    });
    const { token } = await operator.json('POST', `/v1/admin/projects/${project.id}/tokens`, {
      body: JSON.stringify({ name: 'bench', scope: 'build' }),
      headers: { 'content-type': 'application/json' },
      expect: [201],
    });
    projects.push({ id: project.id, name, api: new KilnApi(URL, token) });
  }
  return projects;
}

/** Posts every build, POST_CONCURRENCY at a time, round-robin over the projects. */
async function submit(projects, runTag) {
  const submitted = [];
  let next = 0;
  const postOne = async () => {
    for (let i = next++; i < BUILDS; i = next++) {
      const nonce = `${runTag}-${i}`;
      const query = new URLSearchParams({ output: 'type=tar,dest=out.tar', network: 'none' });
      query.append('build-arg', `FLEET_NONCE=${nonce}`);
      const view = await projects[i % projects.length].api.createBuild(CONTEXT, query.toString(), [202]);
      submitted.push({ id: view.id, nonce });
    }
  };
  await Promise.all(Array.from({ length: POST_CONCURRENCY }, postOne));
  return submitted;
}

/** Waits until every build of `projectIds` is final; samples the load average meanwhile. */
async function waitAllFinal(db, projectIds, timeoutMs) {
  const loads = [];
  const deadline = Date.now() + timeoutMs;
  let lastLog = 0;
  for (;;) {
    const { rows } = await db.query(
      `SELECT count(*) FILTER (WHERE status = ANY($2))::int AS final, count(*)::int AS total
         FROM "Build" WHERE "projectId" = ANY($1)`,
      [projectIds, FINAL],
    );
    const { final, total } = rows[0];
    loads.push(loadavg()[0]);
    if (final >= BUILDS) return loads;
    if (Date.now() - lastLog > 15_000) {
      log(`${final}/${total} final`);
      lastLog = Date.now();
    }
    if (Date.now() > deadline)
      throw new Error(`only ${final} of ${BUILDS} builds final after ${timeoutMs / 1000} s`);
    await sleep(1000);
  }
}

const kilnPids = () => [API_PID, ...WORKER_PIDS];

async function main() {
  const label = `${BUILDERS}b`;
  const db = new pg.Client({ connectionString: env('DATABASE_URL') });
  await db.connect();
  try {
    const projects = await createProjects(label);
    for (const pid of kilnPids()) {
      if (!resetPeakRss(pid)) log(`cannot reset the peak RSS of pid ${pid}: its figure covers start-up too`);
    }
    const cpu0 = [...kilnPids(), ...BUILDKITD_PIDS].map((pid) => procCpuSecondsOr0(pid, { children: true }));
    const busy0 = machineBusySeconds();
    const load0 = loadavg();
    const t0 = Date.now();
    log(
      `${BUILDERS} builder(s): submitting ${BUILDS} builds over ${PROJECTS} projects (RUN sleeps ${SLEEP_S} s)`,
    );
    const submitted = await submit(projects, `${label}-${randomBytes(4).toString('hex')}`);
    const submitS = (Date.now() - t0) / 1000;
    log(`submitted in ${round(submitS, 1)} s; waiting`);
    // Generous: ten times the ideal duration on one builder, at least 10 minutes.
    const timeoutMs = Math.max(600_000, (BUILDS * SLEEP_S * 10_000) / BUILDERS);
    const loadSamples = await waitAllFinal(
      db,
      projects.map((p) => p.id),
      timeoutMs,
    );
    const wallS = (Date.now() - t0) / 1000;
    const cpu = [...kilnPids(), ...BUILDKITD_PIDS].map(
      (pid, i) => procCpuSecondsOr0(pid, { children: true }) - (cpu0[i] ?? 0),
    );
    const peak = (pid) => procMemMiB(pid).hwm;

    const rows = await fetchRun(
      db,
      projects.map((p) => p.id),
    );
    const check = checkRun({ rows, submitted, dataDir: DATA_DIR });
    const run = {
      builders: BUILDERS,
      builder_concurrency: Number(env('BENCH_BUILDER_CONCURRENCY')),
      workers: WORKER_PIDS.length,
      worker_concurrency: Number(env('BENCH_WORKER_CONCURRENCY')),
      builds: BUILDS,
      projects: PROJECTS,
      sleep_s: SLEEP_S,
      submit_s: round(submitS, 2),
      wall_s: round(wallS, 1),
      ...check,
      peak_rss_mib: { api: peak(API_PID), workers: WORKER_PIDS.map(peak) },
      cpu_s: {
        api: round(cpu[0] ?? 0, 1),
        workers: WORKER_PIDS.map((_, i) => round(cpu[i + 1] ?? 0, 1)),
        buildkitd: BUILDKITD_PIDS.map((_, i) => round(cpu[i + 1 + WORKER_PIDS.length] ?? 0, 1)),
      },
      machine: {
        busy_cores: round((machineBusySeconds() - busy0) / wallS, 2),
        loadavg_at_start: load0,
        loadavg_at_end: loadavg(),
        loadavg_1m_mean: round(loadSamples.reduce((a, b) => a + b, 0) / loadSamples.length, 2),
        loadavg_1m_max: Math.max(...loadSamples),
      },
    };
    const results = fs.existsSync(OUT)
      ? JSON.parse(fs.readFileSync(OUT, 'utf8'))
      : {
          benchmark: 'fleet',
          date: new Date().toISOString(),
          git_head: env('BENCH_GIT_HEAD', 'unknown'),
          git_dirty_paths: env('BENCH_GIT_DIRTY', 'unknown'),
          machine: machineFacts(),
          runs: [],
        };
    results.runs.push(run);
    fs.writeFileSync(`${OUT}.tmp`, `${JSON.stringify(results, null, 2)}\n`);
    fs.renameSync(`${OUT}.tmp`, OUT);
    log(
      `${BUILDERS} builder(s): ${check.succeeded_once}/${BUILDS} succeeded once, ${check.throughput_per_min} builds/min, per builder ${JSON.stringify(check.per_builder)}`,
    );
    if (check.problems.length > 0) {
      for (const p of check.problems) log(`FAILED: ${p}`);
      process.exitCode = 1;
    }
  } finally {
    await db.end();
  }
}

await main();
