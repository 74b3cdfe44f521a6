/**
 * Fetching the artifact from its signed URL into `dest`: written to a temporary file beside it
 * while hashing, checked against the build's sha256 digest (and size), then renamed into place
 * (through a symbolic link, onto the file it names). A mismatch deletes the download and fails.
 * `dest` `-` streams to stdout, and a device or FIFO is written into (both checked at the end).
 */
import { createHash, randomBytes } from 'node:crypto';
import { createReadStream, createWriteStream } from 'node:fs';
import { chmod, lstat, mkdir, realpath, rename, rm, stat } from 'node:fs/promises';
import path from 'node:path';
import { Transform, type Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
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

/**
 * Before a build, whether `dest` can become its artifact: not a directory, and its nearest
 * existing parent a directory (the rest is created at the download). Found after the build, a
 * destination like `/etc/passwd/app.tar` would waste it.
 */
export async function checkDestination(dest: string, shown: string): Promise<void> {
  const info = await stat(dest).catch(() => undefined);
  if (info?.isDirectory()) {
    throw new CliError(
      `--output dest "${shown}" is a directory: name a file, e.g. ${path.join(shown, 'app.tar')}`,
    );
  }
  for (let dir = path.dirname(dest); ; dir = path.dirname(dir)) {
    const parent = await stat(dir).catch(() => undefined);
    if (parent?.isDirectory()) return;
    if (parent) throw new CliError(`--output dest "${shown}": ${dir} is not a directory`);
    if (path.dirname(dir) === dir) return;
  }
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

  const into = await destinationOf(path.resolve(opts.dest));
  const failed = (err: unknown) => {
    if (opts.signal?.aborted) return abortReason(opts.signal);
    if (err instanceof CliError) return err;
    return failure(`downloading the artifact to ${opts.dest} failed: ${messageOf(err)}`);
  };
  if (into.kind === 'through') {
    // A device, a FIFO or a link to nowhere: written into as docker does (`dest=/dev/null`);
    // what a wrong digest wrote there cannot be taken back, only reported.
    try {
      await pipeline(
        source,
        meter,
        watch(createWriteStream(into.path)),
        opts.signal ? { signal: opts.signal } : {},
      );
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
    // The file it replaces keeps its permissions, as a file written over in place would.
    if (into.mode !== undefined) await chmod(tmp, into.mode);
    await rename(tmp, into.path);
    return actual;
  } catch (err) {
    source.destroy();
    // Never in place of the reason: with dest under a file, rm fails too (ENOTDIR).
    await rm(tmp, { force: true }).catch(() => undefined);
    throw failed(err);
  }
}

/**
 * Where the artifact goes for `dest`: a regular file (or none yet) is replaced whole once the
 * download checks out; through a symbolic link, the file it names is, and the link stays. Anything
 * else (a device, a FIFO, a socket, a dangling link) is written into, as docker's os.Create would.
 */
async function destinationOf(
  dest: string,
): Promise<{ kind: 'replace'; path: string; mode: number | undefined } | { kind: 'through'; path: string }> {
  const link = await lstat(dest).catch(() => undefined);
  const info = await stat(dest).catch(() => undefined);
  if (link?.isSymbolicLink() && !info) return { kind: 'through', path: dest };
  if (info && !info.isFile()) return { kind: 'through', path: dest };
  const target = link?.isSymbolicLink() ? await realpath(dest) : dest;
  return { kind: 'replace', path: target, mode: info ? info.mode & 0o7777 : undefined };
}
