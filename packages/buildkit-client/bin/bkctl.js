#!/usr/bin/env node
// Streaming an export allocates short-lived objects for every chunk. With V8's default young
// generation (16 MiB semi-spaces) bkctl spent 1.6x the CPU and held 25 MiB more than with 1 MiB
// ones (512 MiB export from buildkitd v0.24.0: user 2.6 s against 1.6 s, peak RSS 117 against
// 83 MiB, and ~1.0x buildctl's wall time instead of ~1.3x). V8 takes the size only at start-up,
// so bkctl starts itself once more with it unless the flag was given.
import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';

const FLAG = '--max-semi-space-size';
const given = [...process.execArgv, process.env.NODE_OPTIONS ?? ''].some((a) => a.includes(FLAG));
if (given) {
  const { main } = await import('../dist/bkctl.bundle.js');
  process.exitCode = await main(process.argv.slice(2));
} else {
  const child = spawn(
    process.execPath,
    [...process.execArgv, `${FLAG}=1`, fileURLToPath(import.meta.url), ...process.argv.slice(2)],
    { stdio: 'inherit' },
  );
  // Ctrl-C reaches both processes (one process group): the child handles it, this one waits.
  process.on('SIGINT', () => undefined);
  for (const signal of ['SIGTERM', 'SIGHUP']) process.on(signal, () => child.kill(signal));
  child.on('exit', (code, signal) => {
    if (signal) {
      process.removeAllListeners(signal);
      process.kill(process.pid, signal);
    } else process.exit(code ?? 1);
  });
}
