// Renders bench/results/fleet.json (written by fleet-measure.mjs, one entry per run) into
// fleet.md: correctness of every run, throughput of the fleet against one builder, queue wait
// and run time, builds per builder, peak RSS and the machine's load.
//
//   node bench/lib/fleet-report.mjs RESULTS.json RESULTS.md START_EPOCH_SECONDS

import fs from 'node:fs';
import { completeResults } from './results.mjs';
import { round } from './stats.mjs';

const TARGET_RATIO = 2.2;

const { r, jsonPath, mdPath } = completeResults('fleet-report.mjs');
const fleet = r.runs.find((x) => x.builders > 1);
const single = r.runs.find((x) => x.builders === 1);
const ratio = fleet && single ? round(fleet.throughput_per_min / single.throughput_per_min, 2) : undefined;
r.throughput_ratio = ratio;
r.target_ratio = TARGET_RATIO;
r.verdict =
  ratio !== undefined && ratio >= TARGET_RATIO && r.runs.every((x) => x.problems.length === 0)
    ? 'pass'
    : 'fail';
fs.writeFileSync(`${jsonPath}.tmp`, `${JSON.stringify(r, null, 2)}\n`);
fs.renameSync(`${jsonPath}.tmp`, jsonPath);

const lines = [];
const p = (s = '') => lines.push(s);
const pct = (x) => `p50 ${x.p50} s, p90 ${x.p90} s, p99 ${x.p99} s, max ${x.max} s`;
const perBuilder = (run) =>
  Object.entries(run.per_builder)
    .map(([address, n]) => `${address.replace(/^unix:\/\/\/tmp\/kiln-fleet-\w+\//, '')} ${n}`)
    .join(', ');

p('# Kiln fleet under load');
p();
p(
  `${r.date} · ${r.machine.cores} cores (${r.machine.cpu_model}), ${r.machine.mem_total_mib.toLocaleString('en')} MiB · total ${r.total_duration_s} s · Kiln at ${String(r.git_head).slice(0, 12)} (${r.git_dirty_paths} changed paths under apps/ packages/ prisma/)`,
);
p();
const any = r.runs[0];
p(
  `Produced by \`bash bench/fleet.sh\`: PostgreSQL, Redis, standalone buildkitd v0.24.0 daemons of concurrency ${any.builder_concurrency} each, the API and ${any.workers} workers (concurrency ${any.worker_concurrency} each, \`scripts/run-app.sh\`), local storage, all on this machine over loopback. Each run submits ${any.builds} builds round-robin over ${any.projects} new projects (4 POSTs at a time, as fast as the API accepts them); each build is a \`RUN\` that sleeps ${any.sleep_s} s (network none) with its own build arg, so neither BuildKit's cache nor Kiln's result cache answers it, and exports a one-file tar. Throughput is builds / (last finishedAt − first createdAt) from the database.`,
);
p();
p(`| | ${r.runs.map((x) => `${x.builders} builder${x.builders > 1 ? 's' : ''}`).join(' | ')} |`);
p(`| --- | ${r.runs.map(() => '---').join(' | ')} |`);
const row = (name, f) => p(`| ${name} | ${r.runs.map(f).join(' | ')} |`);
row(
  'succeeded exactly once (one succeeded attempt, own output checked)',
  (x) => `${x.succeeded_once}/${x.builds} (${x.outputs_checked} outputs)`,
);
row('rows / attempts per build', (x) => `${x.rows} / ${JSON.stringify(x.attempts)}`);
row('attempt outcomes', (x) => JSON.stringify(x.attempt_outcomes));
row('problems', (x) => (x.problems.length === 0 ? 'none' : x.problems.slice(0, 5).join('; ')));
row('throughput', (x) => `**${x.throughput_per_min} builds/min** (${x.span_s} s)`);
row('builds per builder', perBuilder);
row('queue wait (created → running)', (x) => pct(x.queue_wait_s));
row('run time (running → succeeded)', (x) => pct(x.run_s));
row('submitting all builds took', (x) => `${x.submit_s} s`);
row('peak RSS: API / workers', (x) => `${x.peak_rss_mib.api} / ${x.peak_rss_mib.workers.join(', ')} MiB`);
row(
  'CPU s: API / workers / buildkitd',
  (x) => `${x.cpu_s.api} / ${x.cpu_s.workers.join(', ')} / ${x.cpu_s.buildkitd.join(', ')}`,
);
row(
  'machine: busy cores (mean), 1-min load mean / max',
  (x) => `${x.machine.busy_cores} · ${x.machine.loadavg_1m_mean} / ${x.machine.loadavg_1m_max}`,
);
row(
  'load average at start → end',
  (x) => `${x.machine.loadavg_at_start.join(' ')} → ${x.machine.loadavg_at_end.join(' ')}`,
);
p();
p(
  `**Throughput ratio, ${fleet?.builders ?? '?'} builders / 1: ${ratio ?? 'n/a'}** (target ≥ ${TARGET_RATIO}; ideal ${fleet ? fleet.builders : '?'}): **${r.verdict.toUpperCase()}**.`,
);
p();
p(
  "Load: the machine is shared with other engineers' test runs; busy cores is the whole machine's CPU use (all processes) over each run's wall time, and the load averages are sampled every second while it ran.",
);
fs.writeFileSync(mdPath, `${lines.join('\n')}\n`);
if (r.verdict !== 'pass') process.exitCode = 1;
