/**
 * Fetching the artifact from its signed URL into `dest`: written to a temporary file beside it
 * while hashing, checked against the build's sha256 digest (and size), then renamed into place
 * (through a symbolic link, onto the file it names). A mismatch deletes the download and fails.
 * `dest` `-` streams to stdout, and a device or FIFO is written into (both checked at the end).
 */
import { createHash, randomBytes } from 'node:crypto';
import { constants, createReadStream, createWriteStream, open, rmSync } from 'node:fs';
import { access, chmod, lstat, mkdir, realpath, rename, rm, stat } from 'node:fs/promises';
import { Socket } from 'node:net';
import path from 'node:path';
import { Transform, type Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { setTimeout as delay } from 'node:timers/promises';
import { abortReason, apiErrorFrom } from './api.js';
import { CliError, EXIT_UNAVAILABLE, exitCodeForLinkStatus, messageOf } from './errors.js';
import { type HttpResponse, request } from './http.js';

export class DigestMismatchError extends CliError {
  constructor(message: string) {
    super(message, 1, 'digest_mismatch');
    this.name = 'DigestMismatchError';
  }
}

/** Compares a download with what the build recorded; throws DigestMismatchError. */
export function verifyDownload(
  what: string,
  expected: { digest: string | null | undefined; size?: number | undefined },
  actual: { digest: string; size: number },
): void {
  if (expected.size !== undefined && expected.size !== actual.size) {
    throw new DigestMismatchError(`${what}: got ${actual.size} bytes, the build produced ${expected.size}`);
  }
  if (expected.digest && expected.digest !== actual.digest) {
    throw new DigestMismatchError(
      `${what}: sha256 mismatch: expected ${expected.digest}, got ${actual.digest}`,
    );
  }
}

/** How the artifact reaches `dest`. */
export type Destination =
  /** A regular file, or none yet: a temp file beside it, renamed over it once it checks out. */
  | { kind: 'replace'; path: string; mode: number | undefined }
  /** A FIFO or a pipe (`/dev/stdout` into `| tar x`): written into once someone reads it. */
  | { kind: 'fifo'; path: string }
  /** A character device (`/dev/null`), or any file named under /dev or /proc: written into. */
  | { kind: 'device'; path: string };

/**
 * Where the artifact of `dest` (absolute) goes, or a CliError saying why it cannot go there. Asked
 * before the build, so that `/etc/passwd/app.tar` or a link to nowhere does not waste one, and
 * again at the download. Through a symbolic link, the file it names is replaced and the link
 * stays. docker opens `dest` before its build; what it would write into, Kiln does too.
 */
export async function destinationOf(dest: string, shown: string): Promise<Destination> {
  const refuse = (why: string): never => {
    throw new CliError(`--output dest "${shown}"${why}`);
  };
  const link = await lstat(dest).catch(() => undefined);
  if (!link) {
    for (let dir = path.dirname(dest); ; dir = path.dirname(dir)) {
      const parent = await stat(dir).catch(() => undefined);
      if (parent?.isDirectory()) return { kind: 'replace', path: dest, mode: undefined };
      if (parent) refuse(`: ${dir} is not a directory`);
      if (path.dirname(dir) === dir) return { kind: 'replace', path: dest, mode: undefined };
    }
  }
  const info = await stat(dest).catch((err: NodeJS.ErrnoException) =>
    refuse(` is a symbolic link to nowhere (${err.code}): name a file, or make its target`),
  );
  if (info.isDirectory()) refuse(` is a directory: name a file, e.g. ${path.join(shown, 'app.tar')}`);
  if (info.isFIFO()) return { kind: 'fifo', path: dest };
  if (info.isCharacterDevice() || /^\/(dev|proc)\//.test(dest)) return { kind: 'device', path: dest };
  if (!info.isFile()) refuse(' is neither a file, a FIFO nor a character device');
  const target = link.isSymbolicLink() ? await realpath(dest) : dest;
  await access(path.dirname(target), constants.W_OK).catch(() =>
    refuse(`: its directory ${path.dirname(target)} is not writable`),
  );
  // The file it replaces keeps its permissions (not set-id bits), as one written over in place would.
  return { kind: 'replace', path: target, mode: info.mode & 0o1777 };
}

/** `sha256:<hex>` and size of a file. */
export async function digestFile(file: string): Promise<{ digest: string; size: number }> {
  const hash = createHash('sha256');
  let size = 0;
  for await (const chunk of createReadStream(file)) {
    hash.update(chunk as Buffer);
    size += (chunk as Buffer).length;
  }
  return { digest: `sha256:${hash.digest('hex')}`, size };
}

export interface DownloadOptions {
  url: string;
  /** `sha256:<hex>`; null skips the check (with a warning from the caller). */
  digest: string | null | undefined;
  size?: number | undefined;
  /** A file path, or `-` for `stdout`. */
  dest: string;
  stdout?: Writable;
  signal?: AbortSignal;
  onProgress?: (bytes: number, total: number | undefined) => void;
}

export async function downloadArtifact(opts: DownloadOptions): Promise<{ digest: string; size: number }> {
  let res: HttpResponse;
  try {
    res = await request(opts.url, opts.signal ? { signal: opts.signal } : {});
  } catch (err) {
    if (opts.signal?.aborted) throw abortReason(opts.signal);
    throw new CliError(`downloading the artifact failed: ${messageOf(err)}`, EXIT_UNAVAILABLE, 'unreachable');
  }
  if (!res.ok) {
    const refused = await apiErrorFrom(res);
    throw new CliError(
      `downloading the artifact failed: ${refused.message}`,
      exitCodeForLinkStatus(res.status, refused.code),
      refused.code,
    );
  }
  const hash = createHash('sha256');
  let size = 0;
  const total = opts.size ?? (Number(res.header('content-length')) || undefined);
  const meter = new Transform({
    transform(chunk: Buffer, _encoding, callback) {
      hash.update(chunk);
      size += chunk.length;
      opts.onProgress?.(size, total);
      callback(null, chunk);
    },
  });
  const source = res.body;
  const what = opts.dest === '-' ? 'the artifact' : opts.dest;
  // Which side failed first: the answer (a connection lost mid-download, worth retrying: exit 3)
  // or the destination (a full disk). pipeline then destroys the other with the same error.
  let first: 'answer' | 'destination' | undefined;
  source.once('error', () => {
    first ??= 'answer';
  });
  const watch = (out: Writable) =>
    out.once('error', () => {
      first ??= 'destination';
    });
  const failure = (message: string) =>
    first === 'answer' ? new CliError(message, EXIT_UNAVAILABLE, 'unreachable') : new CliError(message);

  if (opts.dest === '-') {
    if (!opts.stdout) throw new CliError('no stdout to write the artifact to');
    await pipeline(source, meter, watch(opts.stdout), {
      end: false,
      ...(opts.signal ? { signal: opts.signal } : {}),
    }).catch((err: unknown) => {
      if (opts.signal?.aborted) throw abortReason(opts.signal);
      throw failure(`downloading the artifact failed: ${messageOf(err)}`);
    });
    const actual = { digest: `sha256:${hash.digest('hex')}`, size };
    verifyDownload(what, opts, actual);
    return actual;
  }

  const into = await destinationOf(path.resolve(opts.dest), opts.dest);
  const failed = (err: unknown) => {
    if (opts.signal?.aborted) return abortReason(opts.signal);
    if (err instanceof CliError) return err;
    return failure(`downloading the artifact to ${opts.dest} failed: ${messageOf(err)}`);
  };
  if (into.kind !== 'replace') {
    // What a wrong digest wrote into a device or a FIFO cannot be taken back, only reported.
    try {
      const out =
        into.kind === 'fifo' ? await openFifo(into.path, opts.signal) : createWriteStream(into.path);
      await pipeline(source, meter, watch(out), opts.signal ? { signal: opts.signal } : {});
      const actual = { digest: `sha256:${hash.digest('hex')}`, size };
      verifyDownload(what, opts, actual);
      return actual;
    } catch (err) {
      source.destroy();
      throw failed(err);
    }
  }
  // Short, whatever the length of the name: a name near the limit still gets its temp file.
  const tmp = path.join(path.dirname(into.path), `.${randomBytes(6).toString('hex')}.kiln-part`);
  const forget = removedAtExit(tmp);
  try {
    await mkdir(path.dirname(into.path), { recursive: true });
    await pipeline(
      source,
      meter,
      watch(createWriteStream(tmp, { flags: 'wx' })),
      opts.signal ? { signal: opts.signal } : {},
    );
    const actual = { digest: `sha256:${hash.digest('hex')}`, size };
    verifyDownload(what, opts, actual);
    if (into.mode !== undefined) await chmod(tmp, into.mode);
    await rename(tmp, into.path);
    return actual;
  } catch (err) {
    source.destroy();
    // Never in place of the reason: with dest under a file, rm fails too (ENOTDIR).
    await rm(tmp, { force: true }).catch(() => undefined);
    throw failed(err);
  } finally {
    forget();
  }
}

/**
 * Removes `file` if the process exits while it may exist: a second Ctrl-C exits at once (io.ts),
 * before the first one's clean-up has run, and 'exit' listeners are what still runs then.
 */
function removedAtExit(file: string): () => void {
  const remove = () => rmSync(file, { force: true });
  process.once('exit', remove);
  return () => process.off('exit', remove);
}

/**
 * The FIFO at `file` open for writing, once a reader has it open: tried without blocking every
 * 100 ms (docker waits in its open; a blocking open here would hold a thread that even
 * process.exit waits for), until `signal` says stop. Written through a pipe handle, which takes
 * the non-blocking descriptor as the event loop wants it.
 */
async function openFifo(file: string, signal: AbortSignal | undefined): Promise<Writable> {
  for (;;) {
    try {
      const fd = await new Promise<number>((resolve, reject) =>
        open(file, constants.O_WRONLY | constants.O_NONBLOCK, (err, got) =>
          err ? reject(err) : resolve(got),
        ),
      );
      return new Socket({ fd, readable: false, writable: true });
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENXIO') throw err;
    }
    await delay(100, undefined, signal ? { signal } : {});
  }
}
