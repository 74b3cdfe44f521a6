// Process and machine helpers shared by the benchmarks (measure.mjs, service-measure.mjs):
// CPU time and memory of a process from /proc, machine-wide busy time, small spawn helpers.

import fs from 'node:fs';
import os from 'node:os';
import { round } from './stats.mjs';

export const CLK_TCK = 100; // USER_HZ on Linux
const PAGE_KIB = 4;

/** Fields of /proc/PID/stat after "pid (comm) ", 0-based: state is [0], ppid [1], utime [11], stime [12]. */
function statFields(pid) {
  const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
  return stat.slice(stat.lastIndexOf(')') + 2).split(' ');
}

/**
 * user+sys CPU seconds of a process so far (all its threads). With `children`, also the CPU
 * of its children that have exited and been waited for (cutime + cstime).
 */
export function procCpuSeconds(pid, { children = false } = {}) {
  const f = statFields(pid);
  let ticks = Number(f[11]) + Number(f[12]);
  if (children) ticks += Number(f[13]) + Number(f[14]);
  return ticks / CLK_TCK;
}

/**
 * CPU seconds of a process split three ways: user and system time, and the time of its main
 * thread (the task whose id is the pid; for Node.js the JavaScript thread) against the rest.
 */
export function procCpuSplit(pid) {
  try {
    const f = statFields(pid);
    const m = statFields(`${pid}/task/${pid}`);
    return {
      user: Number(f[11]) / CLK_TCK,
      sys: Number(f[12]) / CLK_TCK,
      main: (Number(m[11]) + Number(m[12])) / CLK_TCK,
    };
  } catch {
    return { user: 0, sys: 0, main: 0 };
  }
}

/** Like procCpuSeconds, but 0 for a process that has gone (a backend that exited meanwhile). */
export function procCpuSecondsOr0(pid, opts) {
  try {
    return procCpuSeconds(pid, opts);
  } catch {
    return 0;
  }
}

/** True while PID exists and is not a zombie. */
export function pidAlive(pid) {
  try {
    return statFields(pid)[0] !== 'Z';
  } catch {
    return false;
  }
}

/** Start time of a process (clock ticks since boot): with the pid, identifies it across pid reuse. */
export function procStartTime(pid) {
  return Number(statFields(pid)[19]);
}

/** Pids whose parent is PID. */
export function childrenOf(pid) {
  const out = [];
  for (const name of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    try {
      if (Number(statFields(name)[1]) === Number(pid)) out.push(Number(name));
    } catch {
      // gone meanwhile
    }
  }
  return out;
}

/** Pids of processes whose command line (NUL-separated args joined by spaces) matches `re`. */
export function findProcesses(re) {
  const out = [];
  for (const name of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(name) || Number(name) === process.pid) continue;
    try {
      const cmd = fs.readFileSync(`/proc/${name}/cmdline`, 'utf8').replaceAll('\0', ' ');
      if (re.test(cmd)) out.push({ pid: Number(name), cmd: cmd.trim() });
    } catch {
      // gone meanwhile, or a kernel thread
    }
  }
  return out;
}

/**
 * VmRSS, VmHWM (peak resident set) and the RSS split (anonymous memory: heaps, buffers; file:
 * the mapped executable and libraries) of a process, in MiB.
 */
export function procMemMiB(pid) {
  const text = fs.readFileSync(`/proc/${pid}/status`, 'utf8');
  const kib = (key) => Number(new RegExp(`^${key}:\\s+(\\d+) kB`, 'm').exec(text)?.[1] ?? Number.NaN);
  const mib = (key) => round(kib(key) / 1024, 1);
  return {
    rss: mib('VmRSS'),
    hwm: mib('VmHWM'),
    anon: mib('RssAnon'),
    file: mib('RssFile'),
    shmem: mib('RssShmem'),
  };
}

/** Current RSS in MiB from /proc/PID/statm (cheaper than status, for frequent sampling). */
export function procRssMiB(pid) {
  const pages = Number(fs.readFileSync(`/proc/${pid}/statm`, 'utf8').split(' ')[1]);
  return (pages * PAGE_KIB) / 1024;
}

/**
 * Resets a process's peak RSS (VmHWM) to its current RSS (Linux >= 4.0, `echo 5 >
 * /proc/PID/clear_refs`; needs the right to ptrace it). Returns false when not possible.
 */
export function resetPeakRss(pid) {
  try {
    fs.writeFileSync(`/proc/${pid}/clear_refs`, '5');
    return true;
  } catch {
    return false;
  }
}

/** CPU seconds the whole machine spent busy so far (all cores; /proc/stat minus idle and iowait). */
export function machineBusySeconds() {
  const f = fs.readFileSync('/proc/stat', 'utf8').split('\n', 1)[0].trim().split(/\s+/).slice(1).map(Number);
  const total = f.slice(0, 8).reduce((a, b) => a + b, 0);
  return (total - f[3] - f[4]) / CLK_TCK;
}

export function loadavg() {
  return os.loadavg().map((x) => round(x, 2));
}

/** The machine a benchmark ran on, for its results file. */
export function machineFacts() {
  return {
    cores: os.cpus().length,
    cpu_model: os.cpus()[0]?.model ?? 'unknown',
    mem_total_mib: Math.round(os.totalmem() / (1024 * 1024)),
    kernel: os.release(),
    loadavg_at_start: loadavg(),
  };
}

/** Shell-quotes one argument (for logs and bash -c scripts). */
export function shq(s) {
  return /^[\w@%+=:,./-]+$/.test(s) ? s : `'${s.replaceAll("'", "'\\''")}'`;
}

export function waitExit(child) {
  return new Promise((resolve, reject) => {
    child.once('error', reject);
    child.once('close', (code, signal) => resolve({ code, signal }));
  });
}

/** The last `n` lines of a file ('' when unreadable). */
export function tail(file, n = 20) {
  try {
    return fs.readFileSync(file, 'utf8').trimEnd().split('\n').slice(-n).join('\n');
  } catch {
    return '';
  }
}
