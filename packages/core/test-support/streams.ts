/** Stream helpers for storage tests: big deterministic bodies generated on the fly, digests, memory sampling. */
import { createCipheriv, createHash } from 'node:crypto';
import { Readable } from 'node:stream';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';

export const MiB = 1024 * 1024;

/**
 * `size` pseudo-random bytes (AES-256-CTR keystream of `seed`), produced chunk by chunk as the
 * consumer reads; nothing is held beyond one chunk. With `failAt`, the stream errors (with `error`)
 * once that many bytes were produced.
 */
export function pseudoRandomStream(
  size: number,
  opts: { seed?: string; chunkSize?: number; failAt?: number; error?: Error } = {},
): Readable {
  const key = createHash('sha256')
    .update(opts.seed ?? 'kiln')
    .digest();
  const cipher = createCipheriv('aes-256-ctr', key, Buffer.alloc(16));
  const chunkSize = opts.chunkSize ?? 64 * 1024;
  const zeros = Buffer.alloc(chunkSize);
  let produced = 0;
  return new Readable({
    highWaterMark: chunkSize,
    read() {
      if (opts.failAt !== undefined && produced >= opts.failAt) {
        this.destroy(opts.error ?? new Error(`source failed after ${produced} bytes`));
        return;
      }
      const n = Math.min(chunkSize, size - produced);
      if (n <= 0) {
        this.push(null);
        return;
      }
      produced += n;
      this.push(cipher.update(zeros.subarray(0, n)));
    },
  });
}

/** sha256 (hex) and byte count of everything a stream yields. */
export async function digestStream(
  stream: NodeJS.ReadableStream | Readable,
): Promise<{ sha256: string; size: number }> {
  const hash = createHash('sha256');
  let size = 0;
  for await (const chunk of stream as AsyncIterable<Buffer>) {
    hash.update(chunk);
    size += chunk.length;
  }
  return { sha256: hash.digest('hex'), size };
}

export async function readAll(stream: NodeJS.ReadableStream | Readable): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const chunk of stream as AsyncIterable<Buffer>) chunks.push(chunk);
  return Buffer.concat(chunks);
}

export function sha256(data: Buffer | string): string {
  return createHash('sha256').update(data).digest('hex');
}

let gcFn: (() => void) | undefined;
/** A full GC (exposes `gc` at runtime; the test command line has no --expose-gc). */
export function gc(): void {
  if (!gcFn) {
    setFlagsFromString('--expose-gc');
    gcFn = runInNewContext('gc') as () => void;
  }
  gcFn();
}

export interface MemoryFigures {
  baselineRss: number;
  baselineArrayBuffers: number;
  peakRss: number;
  /** Peak of process.memoryUsage().arrayBuffers: live Buffers plus garbage not yet collected. */
  peakArrayBuffers: number;
  /** Peak arrayBuffers measured right after a forced GC: what was really held. */
  peakLiveArrayBuffers: number;
  peakHeapUsed: number;
  rssGrowth: number;
  arrayBuffersGrowth: number;
  liveArrayBuffersGrowth: number;
  samples: number;
}

/**
 * Samples process memory every `intervalMs` from now (after a GC) until `stop()`; every
 * `gcEveryMs` it forces a GC first, to see live (not merely uncollected) Buffer memory.
 */
export function sampleMemory(opts: { intervalMs?: number; gcEveryMs?: number } = {}): {
  stop(): MemoryFigures;
} {
  gc();
  const base = process.memoryUsage();
  let peakRss = base.rss;
  let peakArrayBuffers = base.arrayBuffers;
  let peakLive = base.arrayBuffers;
  let peakHeapUsed = base.heapUsed;
  let samples = 0;
  const take = () => {
    const m = process.memoryUsage();
    samples++;
    peakRss = Math.max(peakRss, m.rss);
    peakArrayBuffers = Math.max(peakArrayBuffers, m.arrayBuffers);
    peakHeapUsed = Math.max(peakHeapUsed, m.heapUsed);
  };
  const takeLive = () => {
    take();
    // Twice: V8 sweeps freed ArrayBuffers concurrently after a GC; the next GC completes that sweep.
    gc();
    gc();
    const m = process.memoryUsage();
    peakLive = Math.max(peakLive, m.arrayBuffers);
  };
  const timer = setInterval(take, opts.intervalMs ?? 10);
  const gcTimer = setInterval(takeLive, opts.gcEveryMs ?? 100);
  return {
    stop() {
      takeLive();
      clearInterval(timer);
      clearInterval(gcTimer);
      return {
        baselineRss: base.rss,
        baselineArrayBuffers: base.arrayBuffers,
        peakRss,
        peakArrayBuffers,
        peakLiveArrayBuffers: peakLive,
        peakHeapUsed,
        rssGrowth: peakRss - base.rss,
        arrayBuffersGrowth: peakArrayBuffers - base.arrayBuffers,
        liveArrayBuffersGrowth: peakLive - base.arrayBuffers,
        samples,
      };
    },
  };
}

/** One line of figures for test diagnostics. */
export function describeMemory(f: MemoryFigures): string {
  return (
    `rss +${mib(f.rssGrowth)} (baseline ${mib(f.baselineRss)}, peak ${mib(f.peakRss)}); ` +
    `arrayBuffers live +${mib(f.liveArrayBuffersGrowth)}, incl. uncollected garbage +${mib(f.arrayBuffersGrowth)}; ` +
    `${f.samples} samples`
  );
}

export function mib(bytes: number): string {
  return `${(bytes / MiB).toFixed(1)} MiB`;
}
