// Helpers for the service benchmark (service-measure.mjs): tar contexts, the Kiln HTTP API,
// the API and worker processes (stop, restart with node flags), CPU accounting of every
// process of the service, RSS sampling.

import { spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { pathToFileURL } from 'node:url';
import { build } from 'esbuild';
import {
  childrenOf,
  machineBusySeconds,
  pidAlive,
  procCpuSecondsOr0,
  procCpuSplit,
  procRssMiB,
  procStartTime,
} from './proc.mjs';
import { percentile, round } from './stats.mjs';

/**
 * The CLI's own SSE parser, so that the bench follows a log exactly as `kiln build` does. The
 * CLI ships as one bundle, so the module is built here from its source, as the CLI's build
 * resolves it (workspace packages from their sources).
 */
async function cliParseSse() {
  const out = path.join(os.tmpdir(), `kiln-bench-follow-${process.pid}.mjs`);
  await build({
    entryPoints: [new URL('../../apps/cli/src/follow.ts', import.meta.url).pathname],
    outfile: out,
    bundle: true,
    platform: 'node',
    format: 'esm',
    target: 'node20.11',
    conditions: ['kiln-source'],
    logLevel: 'warning',
  });
  try {
    return (await import(pathToFileURL(out).href)).parseSse;
  } finally {
    fs.rmSync(out, { force: true });
  }
}
const parseSse = await cliParseSse();

export const MiB = 1024 * 1024;

// ---------------------------------------------------------------------------------------
// Tar contexts (ustar, written here so the bytes are the same on every run)

/** One 512-byte ustar header for a regular file. */
export function tarHeader(name, size, mode = 0o644) {
  const h = Buffer.alloc(512);
  h.write(name, 0, 100, 'utf8');
  h.write(`${mode.toString(8).padStart(7, '0')}\0`, 100);
  h.write('0000000\0', 108); // uid
  h.write('0000000\0', 116); // gid
  h.write(`${size.toString(8).padStart(11, '0')}\0`, 124);
  h.write('00000000000\0', 136); // mtime: the epoch, so the bytes never change
  h.fill(' ', 148, 156); // checksum field counts as spaces while summing
  h.write('0', 156); // regular file
  h.write('ustar\0', 257);
  h.write('00', 263);
  let sum = 0;
  for (const b of h) sum += b;
  h.write(`${sum.toString(8).padStart(6, '0')}\0 `, 148);
  return h;
}

const pad512 = (n) => (512 - (n % 512)) % 512;

/** A tar (Buffer) of small files: [{name, data: Buffer|string, mode}]. */
export function tarOf(entries) {
  const parts = [];
  for (const e of entries) {
    const data = Buffer.isBuffer(e.data) ? e.data : Buffer.from(e.data);
    parts.push(tarHeader(e.name, data.length, e.mode ?? 0o644), data, Buffer.alloc(pad512(data.length)));
  }
  parts.push(Buffer.alloc(1024));
  return Buffer.concat(parts);
}

// ---------------------------------------------------------------------------------------
// The HTTP API

export class KilnApi {
  constructor(url, token) {
    this.url = url.replace(/\/$/, '');
    this.auth = { authorization: `Bearer ${token}` };
  }

  async json(method, p, { body, headers = {}, expect = [200] } = {}) {
    const res = await fetch(`${this.url}${p}`, { method, body, headers: { ...this.auth, ...headers } });
    const text = await res.text();
    if (!expect.includes(res.status)) {
      throw new Error(`${method} ${p}: HTTP ${res.status} ${text.slice(0, 500)}`);
    }
    return text ? JSON.parse(text) : null;
  }

  /** POST /v1/builds with a raw tar body; resolves to the body (202: queued; 201: from the result cache). */
  createBuild(tar, query, expect = [202]) {
    return this.json('POST', `/v1/builds?${query}`, {
      body: tar,
      headers: { 'content-type': 'application/x-tar' },
      expect,
    });
  }

  getBuild(id) {
    return this.json('GET', `/v1/builds/${id}`);
  }

  cancel(id) {
    return this.json('POST', `/v1/builds/${id}/cancel`, { expect: [200, 202, 409] });
  }

  /** Polls GET /v1/builds/:id every `intervalMs` until a final status; resolves to the last view. */
  async waitFinal(id, intervalMs = 20) {
    let polls = 0;
    for (;;) {
      const view = await this.getBuild(id);
      polls++;
      if (['succeeded', 'failed', 'canceled', 'expired'].includes(view.status)) return { view, polls };
      await sleep(intervalMs);
    }
  }

  /**
   * Waits the way `kiln build` does: follows the build's log (server-sent events) until its
   * `end` event, which the worker appends once the final state is committed (the artifact is
   * stored by then), then GETs the final view. Resolves to the view and the number of log events.
   * A stream that ends without `end` (an API restart) falls back to polling.
   */
  async followToEnd(id) {
    const res = await fetch(`${this.url}/v1/builds/${id}/logs`, {
      headers: { ...this.auth, accept: 'text/event-stream' },
    });
    if (!res.ok) throw new Error(`GET /v1/builds/${id}/logs: HTTP ${res.status} ${await res.text()}`);
    let logEvents = 0;
    let ended = false;
    for await (const ev of parseSse(res.body)) {
      if (ev.event === 'log') logEvents++;
      ended = ev.event === 'end';
      if (ended) break;
    }
    if (!ended) return { ...(await this.waitFinal(id)), logEvents };
    await res.body.cancel().catch(() => undefined);
    return { view: await this.getBuild(id), logEvents };
  }

  async healthy() {
    try {
      const res = await fetch(`${this.url}/readyz`);
      await res.arrayBuffer();
      return res.ok;
    } catch {
      return false;
    }
  }
}

// ---------------------------------------------------------------------------------------
// The API and worker processes

/**
 * One Kiln process (API or worker). Starts as the pid service.sh started; `restart(flags)`
 * replaces it with a child of this process started the way service.sh does (`launcher`, e.g.
 * scripts/run-app.sh worker) with node flags such as --cpu-prof added; recorded in
 * `spawnedDir` as "PID STARTTIME" so service.sh can stop it if this script dies.
 */
export class KilnProcess {
  constructor({ name, pid, launcher, logFile, spawnedDir, env, ready }) {
    Object.assign(this, { name, pid, launcher, logFile, spawnedDir, env, ready });
    this.child = null;
    this.flags = [];
  }

  get alive() {
    return this.pid !== null && pidAlive(this.pid);
  }

  /** SIGTERM, then wait (up to `graceMs`, then SIGKILL) until the process is gone. */
  async stop(graceMs = 45_000) {
    if (!this.alive) {
      this.pid = null;
      return;
    }
    const pid = this.pid;
    const exited = this.child ? new Promise((r) => this.child.once('exit', r)) : null;
    process.kill(pid, 'SIGTERM');
    const deadline = performance.now() + graceMs;
    while (pidAlive(pid) && performance.now() < deadline) await sleep(50);
    if (pidAlive(pid)) {
      process.kill(pid, 'SIGKILL');
      while (pidAlive(pid)) await sleep(50);
    }
    if (exited) await exited;
    if (this.child) fs.rmSync(path.join(this.spawnedDir, `${this.name}-${pid}`), { force: true });
    this.child = null;
    this.pid = null;
  }

  /** Starts (a new) process with the given node flags and waits until it is ready. */
  async start(flags = []) {
    if (this.alive) throw new Error(`${this.name} is already running (pid ${this.pid})`);
    const fd = fs.openSync(this.logFile, 'a');
    const child = spawn(this.launcher[0], [...this.launcher.slice(1), ...flags], {
      env: this.env,
      stdio: ['ignore', fd, fd],
    });
    fs.closeSync(fd);
    await new Promise((resolve, reject) => {
      child.once('spawn', resolve);
      child.once('error', reject);
    });
    this.child = child;
    this.pid = child.pid;
    this.flags = flags;
    fs.mkdirSync(this.spawnedDir, { recursive: true });
    fs.writeFileSync(
      path.join(this.spawnedDir, `${this.name}-${child.pid}`),
      `${child.pid} ${procStartTime(child.pid)}\n`,
    );
    const logSize = fs.statSync(this.logFile).size;
    const deadline = performance.now() + 60_000;
    while (!(await this.ready(this, logSize))) {
      if (!this.alive) throw new Error(`${this.name} exited during start-up; see ${this.logFile}`);
      if (performance.now() > deadline)
        throw new Error(`${this.name} not ready after 60 s; see ${this.logFile}`);
      await sleep(100);
    }
  }

  async restart(flags = []) {
    await this.stop();
    await this.start(flags);
  }
}

/** Readiness of a worker: its log says "worker started" after `fromByte`. */
export function workerStartedSince(logFile, fromByte) {
  const fd = fs.openSync(logFile, 'r');
  try {
    const size = fs.fstatSync(fd).size;
    const buf = Buffer.alloc(Math.max(0, size - fromByte));
    fs.readSync(fd, buf, 0, buf.length, fromByte);
    return buf.toString('utf8').includes('"worker started"');
  } finally {
    fs.closeSync(fd);
  }
}

// ---------------------------------------------------------------------------------------
// CPU accounting

/**
 * Snapshots of the CPU seconds used so far by every process of the service and by the machine;
 * `delta(a, b)` turns two into per-process CPU seconds over the interval, and the rest of the
 * machine's busy time as `other_cpu_s` (kernel threads, containerd shims, unrelated load).
 */
export class CpuMeter {
  /** `daemonPid`: dockerd or buildkitd; `containerdPid`: dockerd's private containerd, absent for buildkitd. */
  constructor({ procs, daemonPid, containerdPid, postmasterPid, redisPid }) {
    Object.assign(this, { procs, daemonPid, containerdPid, postmasterPid, redisPid });
  }

  /** The postmaster with its exited children, plus the live backends and helpers. */
  postgresCpu() {
    let s = procCpuSecondsOr0(this.postmasterPid, { children: true });
    for (const pid of childrenOf(this.postmasterPid)) s += procCpuSecondsOr0(pid);
    return s;
  }

  snapshot() {
    const self = process.cpuUsage();
    return {
      t: performance.now(),
      machine: machineBusySeconds(),
      api: this.procs.api.alive ? procCpuSecondsOr0(this.procs.api.pid) : 0,
      apiPid: this.procs.api.pid,
      worker: this.procs.worker.alive ? procCpuSecondsOr0(this.procs.worker.pid) : 0,
      workerPid: this.procs.worker.pid,
      daemon: procCpuSecondsOr0(this.daemonPid),
      containerd: this.containerdPid ? procCpuSecondsOr0(this.containerdPid) : 0,
      postgres: this.postgresCpu(),
      redis: procCpuSecondsOr0(this.redisPid),
      bench: (self.user + self.system) / 1e6,
      apiSplit: this.procs.api.alive ? procCpuSplit(this.procs.api.pid) : null,
      workerSplit: this.procs.worker.alive ? procCpuSplit(this.procs.worker.pid) : null,
    };
  }

  /** Per-process CPU seconds between two snapshots; `client` = CPU of a measured command (docker CLI, curl). */
  delta(a, b, client = 0) {
    const d = (k) => Math.max(0, b[k] - a[k]);
    const out = {
      api_cpu_s: a.apiPid === b.apiPid ? d('api') : null,
      worker_cpu_s: a.workerPid === b.workerPid ? d('worker') : null,
      daemon_cpu_s: d('daemon'),
      containerd_cpu_s: this.containerdPid ? d('containerd') : null,
      postgres_cpu_s: d('postgres'),
      redis_cpu_s: d('redis'),
      bench_cpu_s: d('bench'),
      client_cpu_s: client,
    };
    const accounted = Object.values(out).reduce((s, v) => s + (v ?? 0), 0);
    for (const k of Object.keys(out)) if (out[k] !== null) out[k] = round(out[k], 2);
    out.machine_busy_s = round(d('machine'), 2);
    out.other_cpu_s = round(Math.max(0, d('machine') - accounted), 2);
    // Not part of the sums above: how the API's and worker's CPU splits (JavaScript main thread
    // vs libuv/V8 helper threads; user vs kernel time).
    const split = (x, y, pidA, pidB) =>
      x && y && pidA === pidB
        ? {
            main_thread_s: round(y.main - x.main, 2),
            other_threads_s: round(y.user + y.sys - y.main - (x.user + x.sys - x.main), 2),
            user_s: round(y.user - x.user, 2),
            sys_s: round(y.sys - x.sys, 2),
          }
        : null;
    out.threads = {
      api: split(a.apiSplit, b.apiSplit, a.apiPid, b.apiPid),
      worker: split(a.workerSplit, b.workerSplit, a.workerPid, b.workerPid),
    };
    return out;
  }
}

// ---------------------------------------------------------------------------------------
// RSS sampling

/** Samples a process's RSS every `everyMs` until stop(); stop() returns max and percentiles (MiB). */
export function startRssSampler(pid, everyMs = 50) {
  const samples = [];
  const take = () => {
    try {
      samples.push(procRssMiB(pid));
    } catch {
      // gone
    }
  };
  take();
  const timer = setInterval(take, everyMs);
  return {
    stop() {
      clearInterval(timer);
      take();
      return {
        n: samples.length,
        max_mib: round(Math.max(...samples), 1),
        p50_mib: round(percentile(samples, 50), 1),
        p90_mib: round(percentile(samples, 90), 1),
        first_mib: round(samples[0] ?? Number.NaN, 1),
      };
    },
  };
}
