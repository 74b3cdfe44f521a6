#!/usr/bin/env node
// Completes the JSON written by measure.mjs with the run's total duration and renders
// the Markdown summary next to it.
//
//   node bench/lib/report.mjs RESULTS.json RESULTS.md START_EPOCH_SECONDS

import fs from 'node:fs';
import { completeResults } from './results.mjs';
import { round } from './stats.mjs';

const { r, jsonPath, mdPath } = completeResults('report.mjs');

const pct = (part, whole) => `${Math.round((100 * part) / whole)}%`;
const verdict = (m) =>
  m.verdict === 'inconclusive'
    ? `INCONCLUSIVE: too few quiet pairs (${m.pass_at_face_value ? 'PASS' : 'FAIL'} at face value)`
    : m.verdict === 'no target'
      ? 'no target'
      : m.verdict.toUpperCase();

/** Which side is busy during a timed run, from client and daemon CPU seconds per wall second. */
function busy(m, s, wall) {
  const client = s.client_cpu_s.median;
  const daemon = s.daemon_cpu_s.median;
  return {
    text: `client process CPU ${client} s (${pct(client, wall)} of one core, all threads), ${m.daemon} CPU ${daemon} s (${pct(daemon, wall)})`,
    client: client / wall,
    daemon: daemon / wall,
  };
}

/** A first guess from CPU shares only; the profiles and the probe below say more. */
function bottleneck(m, name, b, cores) {
  if (b.client + b.daemon >= 0.85 * cores) return `${name}: the ${cores} cores are saturated`;
  if (b.daemon >= 0.8 && b.daemon > b.client) return `${name}: ${m.daemon} is the busy side`;
  if (b.client >= 0.8) return `${name}: the client process is the busy side`;
  return `${name}: neither side is CPU-saturated (waiting on I/O or round-trips)`;
}

/** The export probe's verdict on bkctl's file-writing path, when it ran. */
function exportProbeNote(m) {
  const p = r.diagnosis?.[m.daemon]?.export_512mib_probe;
  if (!p) return '';
  const cost = round(p.file.solve_s.median - p.null.solve_s.median, 2);
  const cost4m = round(p['file-4m'].solve_s.median - p.null.solve_s.median, 2);
  const size = p.file.common_chunk_sizes[0]?.size;
  return (
    ` Writing the file costs bkctl ${cost4m} s over a discarding sink (its 4 MiB highWaterMark; ${cost} s with ` +
    `the default one, see the probe below); the export arrives as ${p.file.chunks} messages of ${size} bytes.`
  );
}

/**
 * Where bkctl's extra time goes on buildkitd: its client CPU over buildctl's, and why. The figures
 * are this run's; the mechanism is how the session reaches each daemon.
 */
function sessionNote(m) {
  if (m.daemon !== 'buildkitd') return '';
  const extra = round(m.bkctl.client_cpu_s.median - m[m.reference].client_cpu_s.median, 2);
  const fixed = r.diagnosis?.buildkitd?.fixed_cost_s;
  return (
    ` bkctl uses ${extra} s more client CPU than buildctl. buildkitd has no session upgrade endpoint, so ` +
    'the session (contexts up, exports down) is tunneled through Control.Session as BytesMessages: every byte ' +
    'crosses two HTTP/2 layers in JavaScript (the Control.Session stream, framed by the client itself on an ' +
    "HTTP/2 connection of its own, then the session's own HTTP/2 server and gRPC layer), in 16-32 KiB frames, " +
    'where buildctl does the same in Go; on dockerd the /session upgrade gives the session a socket of its own, ' +
    'one layer.' +
    (fixed
      ? ` Node start-up, module loading and connecting cost ${fixed.bkctl_debug_workers.median} s against ` +
        `buildctl's ${fixed.reference.median} s (\`debug workers\`, median of 5), of which ` +
        `\`node -e 0\` takes ${fixed.node_start?.median ?? '?'} s` +
        (fixed.node_start_no_extra_ca
          ? ` with NODE_EXTRA_CA_CERTS set, as here, and ${fixed.node_start_no_extra_ca.median} s without it` +
            (/^v(1\d|20)\./.test(r.host.node)
              ? ' (Node 20 reads and parses that file at every start, before any JavaScript runs; ' +
                "bkctl's bin starts Node without it when no --tls* flag is given, so bkctl's runs here do not pay it)."
              : '.')
          : '.')
      : '')
  );
}

const cores = r.host.cores;
const lines = [];
const daemons = [
  r.host.docker_server
    ? `docker ${r.host.docker_client} (daemon ${r.host.docker_server}, ${r.host.storage_driver})`
    : null,
  r.host.buildkitd ? `standalone ${r.host.buildkitd}` : null,
].filter(Boolean);
lines.push('# buildkit-client benchmark');
lines.push('');
lines.push(
  `${r.date} · node ${r.host.node} · ${daemons.join(' · ')} · ${cores} cores (${r.host.cpu_model}) · ` +
    `${r.method.samples_per_side} samples per side after one warm-up each, interleaved · total ${r.total_duration_s} s`,
);
lines.push('');
lines.push(
  `Client: ${r.client.package} at ${r.client.git_head.slice(0, 12)}` +
    `${r.client.uncommitted_paths ? ` + ${r.client.uncommitted_paths} uncommitted paths` : ''}, ` +
    `dist sha256 ${r.client.dist_sha256.slice(0, 12)} (${r.client.ran_from}). Each comparison runs both ` +
    'clients against the same daemon: `docker build` on dockerd 20.10 (BuildKit 0.8 inside), `buildctl` ' +
    '(same release, same flags as bkctl) on the standalone buildkitd.',
);
lines.push('');
lines.push(
  '| daemon | benchmark | reference (median) | bkctl (median) | bkctl/reference | target | result |',
);
lines.push('| --- | --- | --- | --- | --- | --- | --- |');

const sideOf = (m) => m[m.reference];
const targetText = (m) => (m.target?.ratio_max ? `≤ ${m.target.ratio_max}` : 'none');
for (const m of r.metrics) {
  const ref = sideOf(m);
  const who = `${m.daemon} | `;
  if (m.id.startsWith('export_512mib_tar')) {
    lines.push(
      `| ${who}Export 512 MiB tar to a file, warm cache | ${m.reference} ${ref.median} s (${ref.mib_per_s} MiB/s) | ` +
        `${m.bkctl.median} s (${m.bkctl.mib_per_s} MiB/s) | ${m.ratio} | ${targetText(m)} | ${verdict(m)} |`,
    );
  } else if (m.id.startsWith('upload_context')) {
    lines.push(
      `| ${who}Upload 50 MB / 2,000-file context, cold | ${m.reference} ${ref.median} s | ${m.bkctl.median} s | ` +
        `${m.ratio} | ${targetText(m)} | ${verdict(m)} |`,
    );
  } else if (m.id === 'peak_rss_2gib_slow_consumer') {
    lines.push(
      `| ${who}Peak RSS exporting 2 GiB to a ${m.sink_mib_per_s} MiB/s consumer | ${m.reference} ${ref.median} MiB ` +
        `(max ${ref.max}) | ${m.bkctl.median} MiB (max ${m.bkctl.max}) | ${m.ratio} | ` +
        `bkctl ≤ ${m.target.bkctl_peak_rss_mib_max} MiB (max of runs) | ${verdict(m)} |`,
    );
  } else if (m.id.startsWith('peak_rss_export')) {
    lines.push(
      `| ${who}Peak RSS of the client, 512 MiB export runs | ${m.reference} ${ref.median} MiB (max ${ref.max}) | ` +
        `${m.bkctl.median} MiB (max ${m.bkctl.max}) | ${m.ratio} | bkctl ≤ ${m.target.bkctl_peak_rss_mib_max} MiB ` +
        `(max of runs) | ${verdict(m)} |`,
    );
  }
}
lines.push('');
for (const m of r.metrics) {
  if (!m.pairs?.busy_threshold) continue;
  const { taken, quiet, medians_over } = m.pairs;
  if (taken === quiet) continue;
  lines.push(
    `${m.title}: ${taken} pairs taken, ${quiet} quiet; medians over ${medians_over} ` +
      `(busy means ${m.pairs.busy_threshold}; every sample is in the JSON).`,
  );
  lines.push('');
}
lines.push('What limits each figure (medians per run):');
lines.push('');
for (const m of r.metrics) {
  const ref = sideOf(m);
  if (m.id.startsWith('export_512mib_tar')) {
    const d = busy(m, ref, ref.median);
    const b = busy(m, m.bkctl, m.bkctl.median);
    lines.push(
      `- Export 512 MiB on ${m.daemon}: ${m.reference}: ${d.text}; bkctl: ${b.text}. ` +
        `${bottleneck(m, 'bkctl', b, cores)}; ${bottleneck(m, m.reference, d, cores)}.${exportProbeNote(m)}` +
        sessionNote(m),
    );
  } else if (m.id.startsWith('upload_context')) {
    const d = busy(m, ref, ref.median);
    const b = busy(m, m.bkctl, m.bkctl.median);
    lines.push(
      `- Context upload on ${m.daemon}: ${m.reference} ${ref.mb_per_s} MB/s, ${d.text}; bkctl ${m.bkctl.mb_per_s} MB/s, ` +
        `${b.text}. ${bottleneck(m, 'bkctl', b, cores)}; ${bottleneck(m, m.reference, d, cores)}.` +
        sessionNote(m),
    );
  } else if (m.id === 'peak_rss_2gib_slow_consumer') {
    const floor = round(2048 / m.sink_mib_per_s, 1);
    const rate = (s) => round(s.sink.reduce((a, x) => a + x.mib_per_s, 0) / s.sink.length, 1);
    const paused = (s) => s.sink.reduce((a, x) => a + x.pauses, 0) > 0;
    lines.push(
      `- Peak RSS on ${m.daemon}: the consumer caps a run at ${floor} s; runs took ${ref.wall_s.median} s (docker) and ` +
        `${m.bkctl.wall_s.median} s (bkctl), the sink averaging ${rate(ref)} / ${rate(m.bkctl)} MiB/s ` +
        `(${paused(m.bkctl) ? 'it did pause, so backpressure reached bkctl' : 'it never had to pause: bkctl was slower than the consumer'}). ` +
        `RSS is what the client buffers between the gRPC stream and a full stdout pipe, plus the runtime ` +
        `(Node vs a Go binary).`,
    );
  }
}
lines.push('');
const others = r.metrics
  .filter((m) => m[m.reference]?.other_cpu_s)
  .map(
    (m) =>
      `${m.id.split('_')[0]} on ${m.daemon} ${m[m.reference].other_cpu_s.median} / ${m.bkctl.other_cpu_s.median} s`,
  )
  .join(', ');
lines.push(
  `Background: CPU used by everything else on the machine during a run (median, reference / bkctl): ${others}; ` +
    `load average at start ${r.host.loadavg_at_start.join(' ')}, per benchmark (1-minute, before → after): ` +
    `${r.metrics
      .filter((m) => m.loadavg)
      .map((m) => `${m.id} ${m.loadavg.before[0]} → ${m.loadavg.after[0]}`)
      .join(', ')}. Large values mean the figures were taken ` +
    `on a busy machine and are noisier; the interleaving spreads such load over both sides.`,
);
const profiles = [
  ['export_512mib', 'one bkctl 512 MiB export'],
  ['upload_context', 'one bkctl 50 MB context upload'],
];
for (const [daemon, diag] of Object.entries(r.diagnosis ?? {})) {
  for (const [key, what] of profiles) {
    const prof = diag[key];
    if (!prof) continue;
    lines.push('');
    lines.push(
      `CPU profile of ${what} on ${daemon} (\`node --cpu-prof\`, main thread: ${prof.profiled_ms} ms sampled, ` +
        `${prof.busy_ms} ms not idle; process wall ${prof.run.wall_s} s, CPU ${prof.run.client_cpu_s} s ` +
        `incl. libuv threads): ${prof.profile}`,
    );
    lines.push('');
    lines.push('| top self time | ms | % of sampled |');
    lines.push('| --- | --- | --- |');
    for (const f of prof.top_self_functions.slice(0, 10)) {
      lines.push(`| \`${f.name}\` | ${f.self_ms} | ${f.pct} |`);
    }
    lines.push('');
    lines.push(
      `By file: ${prof.top_self_files
        .slice(0, 8)
        .map((f) => `\`${f.name}\` ${f.pct}%`)
        .join(', ')}.`,
    );
  }
  const probe = diag.export_512mib_probe;
  if (probe) {
    const f = probe.file;
    const size = f.common_chunk_sizes[0];
    lines.push('');
    lines.push(
      `Where the export time goes on ${daemon} (same solve through the library API, median of 3 each, in-process ` +
        `solve time): into a discarding Writable ${probe.null.solve_s.median} s; into \`createWriteStream(F)\` ` +
        `${f.solve_s.median} s (${f.chunks} writes, mostly ${size?.size} bytes); into ` +
        `\`createWriteStream(F, { highWaterMark: 4 MiB })\` as bkctl does ${probe['file-4m'].solve_s.median} s. Whole-process ` +
        `wall: ${f.wall_s.median} / ${probe['file-4m'].wall_s.median} / ${probe.null.wall_s.median} s.`,
    );
  }
}
lines.push('');
lines.push(`Raw samples, CPU and RSS per run: \`${jsonPath.replace(/^.*\/bench\//, 'bench/')}\`.`);
fs.writeFileSync(mdPath, `${lines.join('\n')}\n`);
process.stderr.write(`report: wrote ${jsonPath} and ${mdPath}\n`);
