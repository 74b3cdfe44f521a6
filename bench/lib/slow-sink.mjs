#!/usr/bin/env node
// A deliberately slow consumer: reads stdin at most RATE MiB/s and counts the bytes.
//
//   producer | node bench/lib/slow-sink.mjs RATE_MIB_PER_S [MIN_BYTES]
//
// Throttling is real backpressure: whenever the bytes read so far are ahead of the
// RATE schedule, stdin is paused (so nothing more is read from the pipe, the pipe
// buffer fills up and the producer's writes block) and resumed once the schedule has
// caught up. On end it prints one JSON line to stdout:
//   {"bytes":..., "seconds":..., "mib_per_s":..., "pauses":..., "paused_ms":...}
// and exits 1 if fewer than MIN_BYTES (default 2 GiB) arrived.

const rateMiB = Number(process.argv[2]);
const minBytes = process.argv[3] === undefined ? 2 * 1024 ** 3 : Number(process.argv[3]);
if (!(rateMiB > 0) || !(minBytes >= 0)) {
  process.stderr.write('usage: slow-sink.mjs RATE_MIB_PER_S [MIN_BYTES]\n');
  process.exit(2);
}
const bytesPerMs = (rateMiB * 1024 * 1024) / 1000;

let bytes = 0;
let pauses = 0;
let pausedMs = 0;
let start;

process.stdin.on('data', (chunk) => {
  start ??= performance.now();
  bytes += chunk.length;
  // When reading `bytes` is allowed at RATE, relative to the first chunk.
  const aheadMs = bytes / bytesPerMs - (performance.now() - start);
  if (aheadMs >= 1) {
    process.stdin.pause();
    pauses++;
    const pausedAt = performance.now();
    setTimeout(() => {
      pausedMs += performance.now() - pausedAt;
      process.stdin.resume();
    }, aheadMs);
  }
});

process.stdin.on('end', () => {
  const seconds = start === undefined ? 0 : (performance.now() - start) / 1000;
  const summary = {
    bytes,
    seconds: Number(seconds.toFixed(3)),
    mib_per_s: seconds > 0 ? Number((bytes / 1024 / 1024 / seconds).toFixed(1)) : null,
    pauses,
    paused_ms: Math.round(pausedMs),
  };
  process.stdout.write(`${JSON.stringify(summary)}\n`);
  if (bytes < minBytes) {
    process.stderr.write(`slow-sink: only ${bytes} bytes arrived, expected at least ${minBytes}\n`);
    process.exitCode = 1;
  }
});
