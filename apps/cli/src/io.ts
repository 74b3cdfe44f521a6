import { addAbortSignal, type Readable, type Writable } from 'node:stream';
import { BrokenPipeError, type CliError, EXIT_BROKEN_PIPE, InterruptedError } from './errors.js';

/**
 * Not SIGHUP: a listener would replace the ignoring that `nohup` sets up, so logging out would
 * cancel a build the user meant to outlive the terminal.
 */
const INTERRUPTS = ['SIGINT', 'SIGTERM'] as const;

export type OutStream = Writable & { isTTY?: boolean; columns?: number; rows?: number };

/** Everything the CLI touches of its process, so tests can run `main` in-process. */
export interface Io {
  stdout: OutStream;
  stderr: OutStream;
  stdin: Readable;
  env: Readonly<Record<string, string | undefined>>;
  cwd: string;
  /**
   * Calls `handler` on Ctrl-C (SIGINT) or SIGTERM, or when the reader of stdout or stderr goes
   * away, with why, until the returned function is called.
   */
  onInterrupt(handler: (reason: CliError) => void): () => void;
}

/**
 * The real process. SIGTERM (a CI job canceled) is handled as Ctrl-C: otherwise it would end
 * the process with the remote build still running and a partial download beside its
 * destination. A second signal while the first is being handled exits at once.
 *
 * When the reader of stdout or stderr goes away (`kiln builds ls | head -1`, `2>&1 | head`), the
 * command ends quietly with 141, as a Unix tool killed by SIGPIPE does, instead of crashing on the
 * unhandled EPIPE. While a command handles interrupts, that goes through its handler, so that
 * `kiln build` cancels its remote build first, as docker's build ends with its client. Another
 * failure to write them (a full disk behind `> file`) ends the process with 1, never a stack
 * trace, and with a line on stderr saying so when it was stdout that failed.
 */
export function processIo(): Io {
  let current: ((reason: CliError) => void) | undefined;
  for (const [name, stream] of [
    ['stdout', process.stdout],
    ['stderr', process.stderr],
  ] as const) {
    stream.on('error', (err: NodeJS.ErrnoException) => {
      if (err.code === 'EPIPE') {
        if (current) return current(new BrokenPipeError(name));
        process.exit(EXIT_BROKEN_PIPE);
      }
      if (name === 'stdout') process.stderr.write(`kiln: writing to stdout failed: ${err.message}\n`);
      process.exit(1);
    });
  }
  return {
    stdout: process.stdout,
    stderr: process.stderr,
    stdin: process.stdin,
    env: process.env,
    cwd: process.cwd(),
    onInterrupt(handler) {
      let seen = false;
      const interrupt = (reason: CliError) => {
        if (!seen) {
          seen = true;
          handler(reason);
        } else if (!(reason instanceof BrokenPipeError)) process.exit(reason.exitCode);
      };
      const onSignal = () => interrupt(new InterruptedError());
      for (const signal of INTERRUPTS) process.on(signal, onSignal);
      current = interrupt;
      return () => {
        for (const signal of INTERRUPTS) process.off(signal, onSignal);
        if (current === interrupt) current = undefined;
      };
    },
  };
}

/**
 * All of `stream`. With `signal`, an abort destroys the stream and rejects with its reason:
 * stdin from a terminal or a stalled pipe may never end, and Ctrl-C must not wait for it.
 */
export async function readAll(stream: Readable, signal?: AbortSignal): Promise<Buffer> {
  if (signal) addAbortSignal(signal, stream);
  const chunks: Buffer[] = [];
  try {
    for await (const chunk of stream)
      chunks.push(Buffer.isBuffer(chunk) ? chunk : Buffer.from(chunk as string));
  } catch (err) {
    throw signal?.aborted ? signal.reason : err;
  }
  return Buffer.concat(chunks);
}
