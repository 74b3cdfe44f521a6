// Small helpers shared by measure.mjs and report.mjs.

import path from 'node:path';

export function round(x, digits) {
  const f = 10 ** digits;
  return Math.round(x * f) / f;
}

export function median(xs) {
  const s = [...xs].sort((a, b) => a - b);
  const mid = s.length >> 1;
  return s.length % 2 ? s[mid] : (s[mid - 1] + s[mid]) / 2;
}

export function stats(xs) {
  return {
    median: round(median(xs), 3),
    min: Math.min(...xs),
    max: Math.max(...xs),
  };
}

/** The p-th percentile (0-100) of xs, nearest rank. */
export function percentile(xs, p) {
  const s = [...xs].sort((a, b) => a - b);
  if (s.length === 0) return Number.NaN;
  return s[Math.min(s.length - 1, Math.max(0, Math.ceil((p / 100) * s.length) - 1))];
}

/**
 * Self time per function of a V8 .cpuprofile (as written by node --cpu-prof), plus
 * self time per file. Paths are shown relative to `root` when below it. With `window`
 * ({fromUs, toUs}, on the profile's clock: CLOCK_MONOTONIC microseconds, the same as
 * process.hrtime in any process on the machine), only samples inside it count.
 */
export function summarizeCpuProfile(profile, root, top = 12, window = undefined) {
  const nodes = new Map(profile.nodes.map((n) => [n.id, n]));
  const selfUs = new Map();
  const { samples, timeDeltas } = profile;
  const from = window?.fromUs ?? Number.NEGATIVE_INFINITY;
  const to = window?.toUs ?? Number.POSITIVE_INFINITY;
  let t = profile.startTime;
  // timeDeltas[i] is the time from sample i-1 to sample i; it is spent in sample i-1.
  for (let i = 0; i < samples.length; i++) {
    t += timeDeltas[i] ?? 0;
    if (t < from || t > to) continue;
    const dt = timeDeltas[i + 1] ?? 0;
    selfUs.set(samples[i], (selfUs.get(samples[i]) ?? 0) + Math.max(0, dt));
  }
  const total = [...selfUs.values()].reduce((a, b) => a + b, 0);
  const shortUrl = (url) => shortProfileUrl(url, root);
  const byFn = new Map();
  const byFile = new Map();
  for (const [id, us] of selfUs) {
    const { functionName, url, lineNumber } = nodes.get(id).callFrame;
    const file = shortUrl(url);
    const name = functionName || (file ? '(anonymous)' : '(native)');
    const key = file ? `${name} ${file}:${lineNumber + 1}` : name;
    byFn.set(key, (byFn.get(key) ?? 0) + us);
    const fileKey = file || name;
    byFile.set(fileKey, (byFile.get(fileKey) ?? 0) + us);
  }
  const rank = (m) =>
    [...m]
      .sort((a, b) => b[1] - a[1])
      .slice(0, top)
      .map(([name, us]) => ({ name, self_ms: round(us / 1000, 1), pct: round((100 * us) / total, 1) }));
  const idle = byFn.get('(idle)') ?? 0;
  return {
    profiled_ms: round(total / 1000, 1),
    busy_ms: round((total - idle) / 1000, 1),
    top_self_functions: rank(byFn),
    top_self_files: rank(byFile),
  };
}

/** A profile frame's script URL as a path relative to `root` when below it. */
export function shortProfileUrl(url, root) {
  if (!url) return '';
  const p = url.startsWith('file://') ? new URL(url).pathname : url;
  return p.startsWith(`${root}/`) ? path.relative(root, p) : p;
}

/**
 * Inclusive (total) time, i.e. the time spent in a frame and in everything it called, over the
 * samples inside `window` (see summarizeCpuProfile), per key: by default one key per function
 * whose file matches `fileRe`; or `keyOf(callFrame, shortFile)` names the key of a frame (null:
 * none), e.g. a library, to get the share of time with that library anywhere on the stack.
 * Percentages are of all sampled time in the window, idle included.
 */
export function inclusiveCpuProfile(profile, root, { fileRe = /./, keyOf, top = 12, window } = {}) {
  const frameKey =
    keyOf ??
    ((frame, file) =>
      file && fileRe.test(file)
        ? `${frame.functionName || '(anonymous)'} ${file}:${frame.lineNumber + 1}`
        : null);
  const nodes = new Map(profile.nodes.map((n) => [n.id, n]));
  const parent = new Map();
  for (const n of profile.nodes) for (const c of n.children ?? []) parent.set(c, n.id);
  const keysOf = new Map();
  const keysFor = (id) => {
    const stack = [];
    let cur = id;
    while (cur !== undefined && !keysOf.has(cur)) {
      stack.push(cur);
      cur = parent.get(cur);
    }
    let keys = cur === undefined ? new Set() : keysOf.get(cur);
    for (let i = stack.length - 1; i >= 0; i--) {
      const frame = nodes.get(stack[i]).callFrame;
      const key = frameKey(frame, shortProfileUrl(frame.url, root));
      if (key !== null && !keys.has(key)) {
        keys = new Set(keys);
        keys.add(key);
      }
      keysOf.set(stack[i], keys);
    }
    return keys;
  };
  const from = window?.fromUs ?? Number.NEGATIVE_INFINITY;
  const to = window?.toUs ?? Number.POSITIVE_INFINITY;
  const inclUs = new Map();
  let total = 0;
  let t = profile.startTime;
  const { samples, timeDeltas } = profile;
  for (let i = 0; i < samples.length; i++) {
    t += timeDeltas[i] ?? 0;
    if (t < from || t > to) continue;
    const dt = Math.max(0, timeDeltas[i + 1] ?? 0);
    total += dt;
    for (const k of keysFor(samples[i])) inclUs.set(k, (inclUs.get(k) ?? 0) + dt);
  }
  return [...inclUs]
    .sort((a, b) => b[1] - a[1])
    .slice(0, top)
    .map(([name, us]) => ({ name, total_ms: round(us / 1000, 1), pct: round((100 * us) / total, 1) }));
}
