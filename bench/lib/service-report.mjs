#!/usr/bin/env node
// Completes the JSON written by service-measure.mjs with the run's total duration and renders
// the Markdown summary next to it.
//
//   node bench/lib/service-report.mjs RESULTS.json RESULTS.md START_EPOCH_SECONDS

import fs from 'node:fs';
import { completeResults } from './results.mjs';
import { round } from './stats.mjs';

const { r, jsonPath, mdPath } = completeResults('service-report.mjs');

const byId = Object.fromEntries(r.metrics.map((m) => [m.id, m]));
// The daemon Kiln built on and the reference client on it (results before both existed: dockerd).
const DAEMON = r.daemon ?? 'dockerd';
const REF = r.reference ?? 'docker';
const REF_CLI = `${REF} CLI`;
const cores = r.host.cores;
const MiB = 1024 * 1024;
const pct = (x) => `${Math.round(100 * x)}%`;
const fmt = (x, d = 3) => (typeof x === 'number' ? String(round(x, d)) : String(x));
const int = (x) => Math.round(x).toLocaleString('en-US');
const list = (xs, d = 3) => xs.map((x) => fmt(x, d)).join(', ');
/** Load runs count as taken on a busy machine when other processes used > 25% of a core meanwhile (median). */
const busyLoad = (m) => m.seconds_per_run && m.other_cpu_s && m.other_cpu_s.median > 0.25 * m.seconds_per_run;
const verdict = (m) =>
  `${m.verdict.toUpperCase()}${m.busy_machine || busyLoad(m) ? ' (busy machine, see below)' : ''}`;

const PROC_NAMES = {
  api_cpu_s: 'API',
  worker_cpu_s: 'worker',
  daemon_cpu_s: DAEMON,
  containerd_cpu_s: 'containerd',
  postgres_cpu_s: 'PostgreSQL',
  redis_cpu_s: 'Redis',
  bench_cpu_s: 'benchmark process',
  client_cpu_s: 'measured command',
  other_cpu_s: 'everything else',
};

/** Median CPU per process of one side as shares of a core, largest first. */
function shares(s, wall, { clientName } = {}) {
  const out = [];
  for (const [k, name] of Object.entries(PROC_NAMES)) {
    const v = s[k]?.median;
    if (typeof v !== 'number' || v < 0.005) continue;
    out.push({
      key: k,
      name: k === 'client_cpu_s' && clientName ? clientName : name,
      cpu: v,
      share: v / wall,
    });
  }
  return out.sort((a, b) => b.share - a.share);
}

const sharesText = (sh) => sh.map((x) => `${x.name} ${fmt(x.cpu, 2)} s (${pct(x.share)})`).join(', ');

/** "worker: JS main thread 1.2 s, helper threads 0.8 s; user 1.5 s, kernel 0.5 s" from a cpuDetail's threads. */
function threadsText(t) {
  if (!t) return '';
  const parts = [];
  for (const [who, x] of Object.entries(t)) {
    if (!x) continue;
    const v = (k) => x[k]?.median ?? x[k];
    if (v('main_thread_s') + v('other_threads_s') < 0.05) continue;
    parts.push(
      `${who === 'api' ? 'API' : who}: JavaScript main thread ${fmt(v('main_thread_s'), 2)} s, libuv/V8 helper ` +
        `threads ${fmt(v('other_threads_s'), 2)} s (user ${fmt(v('user_s'), 2)} s, kernel ${fmt(v('sys_s'), 2)} s)`,
    );
  }
  return parts.length ? ` Split: ${parts.join('; ')}.` : '';
}

/** Sum of a per-run CPU figure (a key, or a function of the run) over the runs, per 2xx response, in ms. */
const perRequestMs = (m, k) => {
  const get = typeof k === 'function' ? k : (x) => x[k];
  return round(
    (1000 * m.runs.reduce((a, x) => a + (get(x) ?? 0), 0)) / m.runs.reduce((a, x) => a + x.ok_responses, 0),
    2,
  );
};
const apiMainMs = (m) => perRequestMs(m, (x) => x.threads?.api?.main_thread_s);

const med = (x) => (typeof x === 'number' ? x : x?.median);

/**
 * A first reading of what bounds a run, from CPU shares (of one core). A Node.js process runs
 * its JavaScript on one thread, so for the API and worker it is that thread's share that tells
 * whether the process is CPU-bound (`threads`: a cpuDetail's thread split, `wall`: the run).
 */
function bound(sh, { threads, wall } = {}) {
  const total = sh.reduce((a, x) => a + x.share, 0);
  if (total >= 0.85 * cores) {
    return (
      `the ${cores} cores are saturated (${pct(total / cores)} of the machine busy; largest: ` +
      `${sh
        .slice(0, 3)
        .map((x) => x.name)
        .join(', ')})`
    );
  }
  const js = [];
  for (const [who, name] of [
    ['api', 'API'],
    ['worker', 'worker'],
  ]) {
    const t = threads?.[who];
    if (t && wall) js.push({ name, share: med(t.main_thread_s) / wall });
  }
  js.sort((a, b) => b.share - a.share);
  // 80%: on a shared machine a thread that always has work still loses some time to others.
  if (js[0] && js[0].share >= 0.8) {
    return `the ${js[0].name}'s JavaScript thread is saturated (${pct(js[0].share)} of a core)`;
  }
  const top = sh[0];
  const nodeNames = ['API', 'worker'];
  if (top && top.share >= 0.85 && !(nodeNames.includes(top.name) && js.length)) {
    return `${top.name} is the busiest process (${pct(top.share)} of a core, all its threads)`;
  }
  return (
    `no thread is CPU-saturated (machine ${pct(total / cores)} busy` +
    `${js[0] ? `, busiest JavaScript thread: the ${js[0].name}'s at ${pct(js[0].share)}` : ''}): ` +
    'the time goes to waiting — on I/O (disk writes, fsync) and on hand-offs between processes and threads'
  );
}

/** The storage probe's medians (seconds) by variant, when it ran. */
function storageProbe() {
  const v = r.diagnosis?.storage_probe?.variants;
  if (!v) return null;
  return Object.fromEntries(Object.entries(v).map(([k, x]) => [k, x.seconds.median]));
}

function storageProbeText() {
  const sp = storageProbe();
  if (!sp) return '';
  return (
    ` Storage path alone (512 MiB, no BuildKit, no gRPC; bench/lib/service-storage-probe.mjs, median of 2): ` +
    `LocalDirStorage.put fed through a PassThrough in 32 KiB chunks as the worker does ${sp['put-32k']} s; ` +
    `the same in 1 MiB chunks ${sp['put-1m']} s; a plain file stream, 32 KiB writes, no hash, no fsync ` +
    `${sp['file-32k']} s, with fsync on close ${sp['file-32k-flush']} s; sha256 alone ${sp['hash-32k']} s.`
  );
}

const lines = [];
const p = (s = '') => lines.push(s);

p('# Kiln service benchmark');
p();
p(
  `${r.date} · node ${r.host.node} · ${r.host.buildkitd ?? `docker ${r.host.docker_server} (${r.host.storage_driver})`} · ` +
    `PostgreSQL ${r.host.postgres.split(' ')[0]} · ${cores} cores (${r.host.cpu_model}), ` +
    `${int(r.host.mem_total_mib)} MiB · ${r.method.samples_per_side} samples per side after one warm-up · ` +
    `total ${r.total_duration_s} s`,
);
p();
p(
  `Kiln at ${r.kiln.git_head.slice(0, 12)}` +
    `${r.kiln.uncommitted_paths ? ` + ${r.kiln.uncommitted_paths} uncommitted paths under apps/ packages/ prisma/` : ''}` +
    ` (dist sha256 ${r.kiln.dist_sha256.slice(0, 12)}): API + worker (\`scripts/run-app.sh api|worker\`: 2 MiB V8 semi-spaces, old-generation limit at 2× the live heap, 2 malloc arenas with 128 KiB trim/mmap thresholds; log level ` +
    `${r.kiln.log_level}) + PostgreSQL + Redis + ` +
    (DAEMON === 'dockerd'
      ? 'one private dockerd whose BuildKit is the builder'
      : 'one standalone buildkitd (OCI worker, overlayfs) as the builder') +
    ', all on this machine over loopback; local storage. ' +
    `The reference is \`${REF} build\` on the same daemon. Produced by ` +
    `\`bash bench/service.sh\`${DAEMON === 'dockerd' ? '' : ' (`BENCH_ONLY=buildkitd` runs only this part)'}.`,
);
p();
p(`| benchmark | ${REF} build (median) | Kiln (median) | figure | target | result |`);
p('| --- | --- | --- | --- | --- | --- |');
const big = byId.e2e_512mib;
const tiny = byId.e2e_tiny;
const wrss = byId.worker_peak_rss_2gib;
const arss = byId.api_peak_rss_1gib_upload;
const get = byId.get_build_rps;
const post = byId.post_build_rps;
if (big) {
  const mibs = (s) => round(big.output_bytes[0] / MiB / s, 1);
  p(
    `| End to end, 512 MiB output, warm cache | ${big[REF].median} s (${mibs(big[REF].median)} MiB/s) | ` +
      `${big.kiln.median} s (${mibs(big.kiln.median)} MiB/s) | Kiln/${REF} ${big.ratio} | ≤ ${big.target.ratio_max} | ` +
      `${verdict(big)} |`,
  );
}
if (tiny) {
  p(
    `| End to end, tiny build (one small COPY), warm | ${tiny[REF].median} s | ${tiny.kiln.median} s | ` +
      `+${tiny.overhead_s} s | ≤ +${tiny.target.overhead_max_s} s | ${verdict(tiny)} |`,
  );
}
if (wrss) {
  p(
    `| Worker peak RSS exporting 2 GiB | — | ${wrss.peak_rss_mib.median} MiB (max ${wrss.peak_rss_mib.max}) | ` +
      `max ${wrss.peak_rss_mib.max} MiB | ≤ ${wrss.target.peak_rss_max_mib} MiB | ${verdict(wrss)} |`,
  );
}
if (arss) {
  p(
    `| API peak RSS receiving a 1 GiB context | — | ${arss.peak_rss_mib.median} MiB (max ${arss.peak_rss_mib.max}) | ` +
      `max ${arss.peak_rss_mib.max} MiB | ≤ ${arss.target.peak_rss_max_mib} MiB | ${verdict(arss)} |`,
  );
}
for (const m of [get, post]) {
  if (!m) continue;
  const what =
    m === get ? 'GET /v1/builds/:id (finished build)' : `POST /v1/builds, 10 KiB context, worker stopped`;
  p(
    `| ${what}, ${m.connections} connections, ${m.seconds_per_run} s runs | — | ` +
      `${int(m.ok_rps.median)} req/s, p50 ${m.latency_p50_ms.median} ms, p99 ${m.latency_p99_ms.median} ms` +
      `${m === post ? `; ${int(m.builds_created)} builds created` : ''} | ${int(m.ok_rps.median)} req/s | ` +
      `≥ ${int(m.target.rps_min)} req/s | ${verdict(m)} |`,
  );
}
p();
const hits = [tiny, big].filter((m) => m?.result_cache_hit);
if (hits.length) {
  p(
    `Every timed Kiln build carries a unique label (${REF} gets the same), so that Kiln builds it ` +
      'instead of answering from its result cache. The identical POST repeated after a succeeded build is ' +
      `answered from that cache (201, already succeeded, no build) in ${hits
        .map((m) => `${m.result_cache_hit.wall_s.median} s (${m.id === 'e2e_tiny' ? 'tiny' : '512 MiB'})`)
        .join(' and ')}, median of ${hits[0].result_cache_hit.wall_s.samples.length}.`,
  );
  p();
}
const busyOnes = r.metrics.filter((m) => m.pairs && m.pairs.taken !== m.pairs.quiet);
for (const m of r.metrics.filter(busyLoad)) {
  p(
    `${m.title}: other processes on the machine used ${round((100 * m.other_cpu_s.median) / m.seconds_per_run, 0)}% ` +
      'of a core during the median run; the per-request CPU costs below do not depend on that, req/s does.',
  );
  p();
}
for (const m of busyOnes) {
  p(
    `${m.title}: ${m.pairs.taken} pairs taken, ${m.pairs.quiet} quiet; medians over ${m.pairs.medians_over} ` +
      `(busy: ${m.pairs.busy_threshold}).`,
  );
  p();
}
const gate = r.quiet_gate;
const waited = (r.waited_for_other_benchmark_s ?? []).reduce((a, b) => a + b, 0);
p(
  `Machine: load average ${r.host.loadavg_at_start.join(' ')} at the start. ` +
    `${gate ? `Before ${gate.runs_delayed} runs the benchmark waited for other processes, PostgreSQL's after-work and the disk's writeback (dirty pages ≤ 64 MiB) to calm down (${gate.waited_s} s in all; ${gate.runs_still_busy} runs started busy anyway). ` : ''}` +
    `${waited ? `It waited ${round(waited, 1)} s for another benchmark to finish. ` : ''}` +
    '"Everything else" below is CPU used by processes outside the service (other jobs on this machine, ' +
    'kernel threads): when it is large, figures are noisier.',
);
p();

// ---------------------------------------------------------------------------------------
p('## All samples');
p();
for (const m of [tiny, big]) {
  if (!m) continue;
  const mark = (rs) => rs.map((x) => `${fmt(x.wall_s)}${x.busy_machine ? '*' : ''}`).join(', ');
  p(`- ${m.title} (s, in order; * = busy machine): ${REF} ${mark(m.runs[REF])}; Kiln ${mark(m.runs.kiln)}.`);
  const ph = m.kiln.phases;
  p(
    `  Kiln phases (medians): POST until 202 ${ph.post_s.median} s, created → running ${ph.queued_s.median} s, ` +
      `running → succeeded ${ph.running_s.median} s, succeeded → end of its log stream seen and final view read ` +
      `${ph.seen_after_finish_s.median} s (${ph.log_events.median} log events). ` +
      `Warm-ups: ${REF} ${m.warmup[REF].wall_s} s, Kiln ${m.warmup.kiln.wall_s} s.`,
  );
}
for (const m of [wrss, arss]) {
  if (!m) continue;
  p(
    `- ${m.title} (MiB): peak ${list(m.peak_rss_mib.samples, 1)}; RSS just before ${list(m.rss_before_mib.samples, 1)}; ` +
      `max of the 50 ms samples ${list(
        m.runs.map((x) => x.sampled_rss.max_mib),
        1,
      )}; run wall ${list(m.wall_s.samples, 2)} s` +
      `${m.mib_per_s ? ` (${list(m.mib_per_s.samples, 0)} MiB/s)` : ''}` +
      `${m.mib_per_s_running ? ` (${list(m.mib_per_s_running.samples, 0)} MiB/s while running)` : ''}. ` +
      `Warm-up: peak ${m.warmup.peak_rss_mib} MiB.`,
  );
}
for (const m of [get, post]) {
  if (!m) continue;
  p(
    `- ${m.title}: req/s ${list(m.ok_rps.samples, 0)}; p50 ${list(m.latency_p50_ms.samples, 0)} ms; ` +
      `p99 ${list(m.latency_p99_ms.samples, 0)} ms` +
      `${m.builds_created_per_run ? `; builds created per run ${m.builds_created_per_run.join(', ')}` : ''}; ` +
      `non-2xx ${m.non_2xx}, errors ${m.errors}, timeouts ${m.timeouts}. Warm-up (3 s): ${int(m.warmup.ok_rps)} req/s.`,
  );
}
p();

// ---------------------------------------------------------------------------------------
p('## What limits each figure');
p();
p(
  'CPU seconds per run (median) of each process, with its share of one core over the run; the machine has ' +
    `${cores} cores (${cores * 100}%).`,
);
p();
if (big) {
  const d = shares(big[REF], big[REF].median, { clientName: REF_CLI });
  const k = shares(big.kiln, big.kiln.median);
  p(
    `- End to end 512 MiB. ${REF}: ${sharesText(d)} → ${bound(d)}. Kiln: ${sharesText(k)} → ` +
      `${bound(k, { threads: big.kiln.threads, wall: big.kiln.median })}. ` +
      `Kiln's time is the worker's "running" phase (${big.kiln.phases.running_s.median} s of ${big.kiln.median} s): ` +
      'fetching and extracting the context, the solve, and the export streamed through the worker into the ' +
      `storage file (hashed with sha256 on the way); the ${REF_CLI} writes the same tar straight to its file.` +
      threadsText(big.kiln.threads) +
      storageProbeText() +
      (DAEMON === 'buildkitd'
        ? " On buildkitd the worker's session runs through Control.Session (no upgrade endpoint): the export " +
          'crosses two HTTP/2 layers in JavaScript before the storage path, where buildctl does that in Go ' +
          '(bench/results/buildkit-client.md measures that part alone).'
        : ''),
  );
}
if (tiny) {
  const d = shares(tiny[REF], tiny[REF].median, { clientName: REF_CLI });
  const k = shares(tiny.kiln, tiny.kiln.median);
  const ph = tiny.kiln.phases;
  p(
    `- End to end tiny. ${REF}: ${sharesText(d)} → ${bound(d)}. Kiln: ${sharesText(k)} → ` +
      `${bound(k, { threads: tiny.kiln.threads, wall: tiny.kiln.median })}. ` +
      `Of Kiln's ${tiny.kiln.median} s: POST ${ph.post_s.median} s, queue + pick-up + builder lease ` +
      `${ph.queued_s.median} s, running ${ph.running_s.median} s (context fetch and extract, BuildKit session ` +
      `and solve, export, storing, final update), learning it ${ph.seen_after_finish_s.median} s (the log ` +
      "stream's end event, then the GET of the final view)." +
      threadsText(tiny.kiln.threads),
  );
}
/** How a process's RSS moved over the RSS benchmark's runs (warm-up included). */
function rssStory(m, who) {
  const fresh = r.kiln.idle_rss_after_start_mib?.[who === 'worker' ? 'worker' : 'api'];
  const all = [m.warmup, ...m.runs];
  const rise = Math.max(...all.map((x) => x.peak_rss_mib - x.rss_before_mib));
  return (
    `${
      fresh
        ? `Right after start-up the ${who} held ${fresh.rss} MiB (${fresh.anon} anonymous: V8 heap and ` +
          `buffers; ${fresh.file} file-backed: the node binary and libraries). `
        : ''
    }` +
    `Before the first (warm-up) transfer it was at ${m.warmup.rss_before_mib} MiB; before the measured ones ` +
    `${list(m.rss_before_mib.samples, 1)} MiB (${m.rss_before_anon_mib.median} anonymous, ` +
    `${m.rss_before_file_mib.median} file-backed, medians), peaking at ${list(m.peak_rss_mib.samples, 1)} MiB. ` +
    `A transfer raised RSS by at most ${round(rise, 1)} MiB over where it started (warm-up included; median of ` +
    `the measured ones ${Math.max(0, m.peak_minus_before_mib.median)} MiB)` +
    (fresh && Math.min(...m.rss_before_mib.samples) > fresh.rss
      ? `, and between transfers the ${who} never went back down to its start-up size.`
      : '.')
  );
}

if (wrss) {
  p(
    `- Worker RSS. ${rssStory(wrss, 'worker')} Throughput while running ${wrss.mib_per_s_running.median} MiB/s; ` +
      `CPU per run: ${sharesText(shares(wrss, wrss.wall_s.median))}.${threadsText(wrss.threads)}`,
  );
}
if (arss) {
  p(
    `- API RSS. ${rssStory(arss, 'API')} The upload ran at ${arss.mib_per_s.median} MiB/s (validate, hash, ` +
      `temp file, then copy into storage); CPU per run: ` +
      `${sharesText(shares(arss, arss.wall_s.median, { clientName: 'curl' }))}.${threadsText(arss.threads)}`,
  );
}
for (const m of [get, post]) {
  if (!m) continue;
  const wall = m.runs[0]?.wall_s ?? 10;
  const sh = shares(m, wall);
  const perReq = (k) => perRequestMs(m, k);
  const js = apiMainMs(m);
  p(
    `- ${m === get ? 'GET' : 'POST'} load: ${sharesText(sh)} → ${bound(sh, { threads: m.threads, wall })}. ` +
      `Per request: API ${perReq('api_cpu_s')} ms of CPU (${js} ms on its JavaScript thread), PostgreSQL ` +
      `${perReq('postgres_cpu_s')} ms, Redis ${perReq('redis_cpu_s')} ms, autocannon ${perReq('bench_cpu_s')} ms. ` +
      `At ${js} ms of JavaScript-thread time per request one API process serves at most ~${int(1000 / js)} req/s, ` +
      `with a core to itself.${threadsText(m.threads)}`,
  );
}
p();

// ---------------------------------------------------------------------------------------
const diag = r.diagnosis ?? {};
if (Object.values(diag).some((x) => x.top_self_functions)) {
  p('## CPU profiles');
  p();
  p(
    'Taken with `node --cpu-prof` (process restarted with the flag; samples counted only inside the load ' +
      "window, after a warm-up). Self time is the main thread's; “inclusive” counts a sample for every library " +
      'on its stack.',
  );
  for (const [key, prof] of Object.entries(diag)) {
    if (!prof.top_self_functions) continue;
    p();
    p(`### ${key}: ${prof.what}`);
    p();
    p(
      `Window ${prof.window_s} s; main thread sampled ${prof.profiled_ms} ms, not idle ${prof.busy_ms} ms ` +
        `(${pct(prof.busy_ms / prof.profiled_ms)}); the process used ${prof.process_cpu_s} s of CPU (all threads).` +
        `${threadsText({ [prof.process]: prof.cpu.threads?.[prof.process] })} Profile: \`${prof.profile}\`.`,
    );
    p();
    p('| top self time | ms | % of window |');
    p('| --- | --- | --- |');
    for (const f of prof.top_self_functions.slice(0, 10)) p(`| \`${f.name}\` | ${f.self_ms} | ${f.pct} |`);
    p();
    p(
      `Self time by kind: ${prof.categories
        .slice(0, 8)
        .map((c) => `${c.category} ${c.pct}%`)
        .join(', ')}.`,
    );
    p();
    p(
      `Inclusive (on the stack): ${prof.libraries_inclusive.map((c) => `${c.library} ${c.pct}%`).join(', ')}. ` +
        `Kiln functions: ${prof.kiln_functions_inclusive
          .slice(0, 5)
          .map((f) => `\`${f.name}\` ${f.pct}%`)
          .join(', ')}.`,
    );
  }
  p();
}

if (diag.storage_probe) {
  p('## Storage path probe');
  p();
  p(`${diag.storage_probe.what}.`);
  p();
  p('| variant | seconds (median of 2) | MiB/s | CPU s | writes |');
  p('| --- | --- | --- | --- | --- |');
  for (const [k, v] of Object.entries(diag.storage_probe.variants)) {
    p(
      `| ${k} | ${v.seconds.median} | ${round(512 / v.seconds.median, 0)} | ${v.cpu_s.median} | ${int(v.writes)} |`,
    );
  }
  p();
}

/** What the 512 MiB figures say about where Kiln's extra time goes. */
function bigExplanation(m, sp) {
  const workerCpu = med(m.kiln.worker_cpu_s);
  const cliCpu = med(m[REF].client_cpu_s);
  const parts = [
    ` The worker uses ${workerCpu} s of CPU per build, the ${REF_CLI} ${cliCpu} s for the same bytes.`,
  ];
  if (sp) {
    const fsync = round(sp['file-32k-flush'] - sp['file-32k'], 2);
    const putCpu = diag.storage_probe.variants['put-32k'].cpu_s.median;
    parts.push(
      ` The storage path alone (a separate process feeding LocalDirStorage.put at full speed) takes ` +
        `${sp['put-32k']} s and ${putCpu} s of CPU for 512 MiB in 32 KiB chunks, the size the export arrives in ` +
        `(${sp['put-1m']} s in 1 MiB chunks), of which sha256 is ${sp['hash-32k']} s and a plain file stream ` +
        `${sp['file-32k']} s; an fsync on close of that plain stream ${fsync > 0.05 ? `adds ${fsync} s` : 'adds no measurable time on this disk'} ` +
        `(LocalDirStorage syncs as it writes: fdatasync every 32 MiB and once at the end; ${REF} does not sync ` +
        'its file). That is work the ' +
        `${REF_CLI} does not do (it writes the tar to its file, unhashed), and in the worker its hashing and ` +
        'write calls run on the JavaScript thread that also receives the export.',
    );
  }
  const t = m.kiln.threads?.worker;
  const busy = shares(m.kiln, m.kiln.median).reduce((a, x) => a + x.share, 0);
  if (t && med(t.main_thread_s) / m.kiln.median < 0.85 && busy < 0.85 * cores) {
    parts.push(
      ` With no thread saturated (the worker's JavaScript thread ${pct(med(t.main_thread_s) / m.kiln.median)} busy, ` +
        `the machine ${pct(busy / cores)}), the rest of the gap is waiting between the stages the export passes ` +
        '(BuildKit → gRPC session → PassThrough → sha256 → file; the build counts as stored once the file is ' +
        'synced and renamed), not a lack of CPU.',
    );
  }
  parts.push(
    ` Serving the build (POST, the followed log stream, the final GET) costs the API ${med(m.kiln.api_cpu_s)} s ` +
      'of CPU per build on the same two cores.',
  );
  return parts.join('');
}

// ---------------------------------------------------------------------------------------
// Diagnosis of the missed targets, from the figures above.
const missed = r.metrics.filter((m) => m.verdict === 'fail');
if (missed.length) {
  p('## Diagnosis of the missed targets');
  p();
  const catPct = (prof, name) => prof?.categories.find((c) => c.category.startsWith(name))?.pct ?? 0;
  const libPct = (prof, name) => prof?.libraries_inclusive.find((c) => c.library.startsWith(name))?.pct ?? 0;
  for (const m of missed) {
    if (m === get || m === post) {
      const prof = diag[m === get ? 'get_build_api' : 'post_build_api'];
      const js = apiMainMs(m);
      const cap = 1000 / js;
      const wall = m.runs[0]?.wall_s ?? 10;
      p(
        `- **${m.title}: ${int(m.ok_rps.median)} req/s vs ≥ ${int(m.target.rps_min)}.** Each request costs ` +
          `the API ${js} ms on its JavaScript thread (${perRequestMs(m, 'api_cpu_s')} ms of CPU in all), and a ` +
          `Node.js process runs its JavaScript on one thread: one API process tops out near ${int(cap)} req/s ` +
          `even with a core to itself, ${round(m.target.rps_min / cap, 1)}× short of the target. Here it shared ` +
          `${cores} cores with PostgreSQL (${perRequestMs(m, 'postgres_cpu_s')} ms per request), the load generator ` +
          `and everything else: ${bound(shares(m, wall), { threads: m.threads, wall })}.` +
          (prof
            ? ` In the profile the main thread is busy ${pct(prof.busy_ms / prof.profiled_ms)} of the window; ` +
              `Prisma is on the stack ${libPct(prof, 'Prisma')}% of it (its query compiler, WebAssembly, alone ` +
              `${catPct(prof, 'Prisma query compiler')}% self), the pg driver ${libPct(prof, 'pg driver')}%, ` +
              `Fastify ${libPct(prof, 'Fastify')}%, pino logging ${libPct(prof, 'pino')}%, garbage collection ` +
              `${catPct(prof, 'garbage')}%.`
            : '') +
          (m === get
            ? ' A GET is one prepared SQL query on the pg pool (the build row; the token comes from the ' +
              "API's TokenCache after its first use), an HMAC-signed download URL and one log line."
            : ' A POST also streams the body through tar validation and sha256 into a temp file and stores it, ' +
              'looks up the result cache (one prepared SQL query), inserts the build with Prisma (one batch ' +
              'transaction) and adds the BullMQ job in Redis.'),
      );
    } else if (m === wrss || m === arss) {
      const prof = diag[m === wrss ? 'e2e_512mib_worker' : 'api_rss_upload_api'];
      const who = m === wrss ? 'worker' : 'API';
      const fresh = r.kiln.idle_rss_after_start_mib?.[who === 'worker' ? 'worker' : 'api'];
      p(
        `- **${m.title}: max ${m.peak_rss_mib.max} MiB vs ≤ ${m.target.peak_rss_max_mib}.** ${rssStory(m, who)} ` +
          `So the transfer itself streams in bounded memory (backpressure holds); the target is missed by the ` +
          `process's resting size${fresh ? `, ${fresh.rss} MiB from the start` : ''}: the node runtime ` +
          `(${m.rss_before_file_mib.median} MiB file-backed) plus the V8 heap of what it loads — the Prisma ` +
          `client with its WebAssembly query compiler, BullMQ/ioredis, ` +
          `${who === 'worker' ? 'gRPC/protobuf' : 'Fastify with its plugins'}, pino — and what earlier work left ` +
          'in the heap.' +
          (prof
            ? ` CPU profile of the same path: garbage collection ${catPct(prof, 'garbage')}% of the window; top ` +
              `self: ${prof.top_self_functions
                .filter((f) => f.name !== '(idle)')
                .slice(0, 3)
                .map((f) => `\`${f.name}\` ${f.pct}%`)
                .join(', ')}.`
            : ''),
      );
    } else if (m === big || m === tiny) {
      const prof = diag[m === big ? 'e2e_512mib_worker' : 'e2e_tiny_worker'];
      const ph = m.kiln.phases;
      const t = m.kiln.threads?.worker;
      const sp = storageProbe();
      p(
        `- **${m.title}: ${m === big ? `ratio ${m.ratio} vs ≤ ${m.target.ratio_max}` : `+${m.overhead_s} s vs ≤ +${m.target.overhead_max_s} s`}.** ` +
          `Kiln ${m.kiln.median} s = POST ${ph.post_s.median} + queued ${ph.queued_s.median} + running ` +
          `${ph.running_s.median} + noticed ${ph.seen_after_finish_s.median} s; ${REF} ${m[REF].median} s.` +
          (t
            ? ` During a build the worker's JavaScript thread ran ${med(t.main_thread_s)} s and its helper ` +
              `threads (libuv pool: file writes; V8: GC) ${med(t.other_threads_s)} s, kernel time included.`
            : '') +
          (m === big ? bigExplanation(m, sp) : '') +
          (prof
            ? ` Worker profile: main thread busy ${pct(prof.busy_ms / prof.profiled_ms)}; top self: ${prof.top_self_functions
                .filter((f) => f.name !== '(idle)')
                .slice(0, 4)
                .map((f) => `\`${f.name}\` ${f.pct}%`)
                .join(', ')}.`
            : ''),
      );
    }
  }
  p();
}
p(
  `Raw samples, CPU per process per run, profiles' summaries: \`${jsonPath.replace(/^.*\/bench\//, 'bench/')}\`.`,
);
fs.writeFileSync(mdPath, `${lines.join('\n')}\n`);
process.stderr.write(`service-report: wrote ${jsonPath} and ${mdPath}\n`);
