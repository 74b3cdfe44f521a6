import { createHmac, randomBytes, timingSafeEqual } from 'node:crypto';
import { constants } from 'node:fs';
import {
  type FileHandle,
  lstat,
  mkdir,
  open,
  readdir,
  realpath,
  rename,
  rm,
  rmdir,
  unlink,
  writeFile,
} from 'node:fs/promises';
import path from 'node:path';
import type { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { AppError } from '../errors.js';
import { removeStaleFiles } from '../stale-files.js';
import { HashingFileSink } from './file-sink.js';
import type {
  GetOptions,
  GetResult,
  ListedObject,
  ObjectInfo,
  ObjectStorage,
  PutOptions,
  PutResult,
} from './types.js';
import { abortReason, destroyQuietly, resolveRange, validateKey } from './util.js';

export interface LocalDirStorageOptions {
  /** Directory holding the objects; created when missing. Nothing outside it is ever touched. */
  root: string;
  /** Base of the URLs `signedUrl` returns, e.g. `https://kiln.example.com` (the API serves `/v1/files/*`). */
  publicBaseUrl: string;
  /** HMAC-SHA256 key for signed URLs; at least 16 bytes (the config asks for 32 characters). */
  signingKey: string | Buffer;
}

/** The path under `publicBaseUrl` where the API serves local objects. */
export const LOCAL_FILES_PATH = '/v1/files/';

/** A put's temp file: `.<name>.<16 hex>.tmp` beside its target. */
const PUT_TEMP_SUFFIX = '.tmp';
const PUT_TEMP_FILE = /^\..+\.[0-9a-f]{16}\.tmp$/;

/** Tries at making a put's directory and temp file, should deletes keep emptying the directory. */
const TEMP_ATTEMPTS = 5;

/** Chunk size of putFile's copy. */
const COPY_BUFFER = 1024 * 1024;

/**
 * Objects as files under one directory. A put streams into a temp file beside the target
 * (`.<name>.<random>.tmp`; keys can't start with "." so they never collide) and renames it into
 * place, so readers see either the old object or the whole new one, and a failed put leaves nothing.
 * Downloads go through the API with HMAC-signed, expiring URLs (see `verifyLocalSignature`).
 */
export class LocalDirStorage implements ObjectStorage {
  readonly kind = 'local' as const;
  readonly root: string;
  private readonly publicBaseUrl: string;
  private readonly signingKey: Buffer;
  private realRoot: string | undefined;

  constructor(opts: LocalDirStorageOptions) {
    if (!opts.root) throw new Error('LocalDirStorage: root is required');
    this.root = path.resolve(opts.root);
    this.publicBaseUrl = opts.publicBaseUrl.replace(/\/+$/, '');
    this.signingKey = toKeyBuffer(opts.signingKey);
  }

  /**
   * Removes the temp files of puts whose process was killed (no write for `olderThanMs`). The
   * worker runs it at start-up, in the background: the walk reads every directory of the store.
   */
  async removeAbandonedPuts(under: readonly string[], olderThanMs: number): Promise<string[]> {
    const removed: string[] = [];
    for (const prefix of under) {
      removed.push(...(await removeStaleFiles(path.join(this.root, prefix), PUT_TEMP_FILE, olderThanMs)));
    }
    return removed;
  }

  /** Absolute file path of a key (validated; always inside root). */
  pathFor(key: string): string {
    validateKey(key);
    const file = path.join(this.root, ...key.split('/'));
    if (!file.startsWith(this.root + path.sep)) {
      // validateKey makes this unreachable; kept as a second fence.
      throw new AppError('invalid_request', 'storage key escapes the storage root');
    }
    return file;
  }

  async put(key: string, body: NodeJS.ReadableStream | Readable, opts: PutOptions = {}): Promise<PutResult> {
    let sourceError: unknown;
    // Registered before pipeline's own handlers, so an error from the caller's stream is known as such.
    body.on('error', (err: unknown) => {
      sourceError ??= err;
    });
    return this.writeObject(
      key,
      opts,
      (sink, signal) => pipeline(body, sink, { ...(signal ? { signal } : {}) }),
      () => sourceError,
      () => destroyQuietly(body),
    );
  }

  /**
   * Copies through one reused buffer, each chunk written before the next is read. A read stream
   * allocates a buffer per chunk: while the API stored a 1 GiB upload, up to 26 MiB of them
   * waited for the garbage collector (1.2 MiB with this loop).
   */
  async putFile(key: string, file: string, opts: PutOptions = {}): Promise<PutResult> {
    return this.writeObject(key, opts, async (sink, signal) => {
      const source = await open(file, 'r');
      try {
        const buffer = Buffer.allocUnsafe(COPY_BUFFER);
        for (;;) {
          if (signal?.aborted) throw abortReason(signal);
          const { bytesRead } = await source.read(buffer, 0, buffer.length, null);
          if (bytesRead === 0) break;
          await new Promise<void>((resolve, reject) =>
            sink.write(buffer.subarray(0, bytesRead), (err) => (err ? reject(err) : resolve())),
          );
        }
        await new Promise<void>((resolve, reject) => {
          sink.once('error', reject);
          sink.end(resolve);
        });
      } catch (err) {
        sink.destroy();
        throw err;
      } finally {
        await source.close();
      }
    });
  }

  /**
   * Runs `fill` into a HashingFileSink on a temp file beside the object, then renames it into
   * place. On failure nothing remains; the error is the abort reason, the source's own error
   * (`sourceError`), or AppError('unavailable').
   */
  private async writeObject(
    key: string,
    opts: PutOptions,
    fill: (sink: HashingFileSink, signal: AbortSignal | undefined) => Promise<void>,
    sourceError: () => unknown = () => undefined,
    dropSource: () => void = () => undefined,
  ): Promise<PutResult> {
    const file = this.pathFor(key);
    const { signal } = opts;
    if (signal?.aborted) {
      dropSource();
      throw abortReason(signal);
    }
    let temp: { tmp: string; fh: FileHandle };
    try {
      temp = await this.createTempBeside(file);
    } catch (err) {
      dropSource();
      throw this.backendError('put', key, err);
    }
    const { tmp } = temp;
    const sink = new HashingFileSink(temp.fh);
    try {
      await fill(sink, signal);
      await rename(tmp, file);
    } catch (err) {
      // The sink holds the temp file's handle, also when the fill failed before its first write.
      await closeSink(sink);
      await rm(tmp, { force: true }).catch(() => undefined);
      if (signal?.aborted) throw abortReason(signal);
      if (sourceError() !== undefined) throw sourceError();
      throw this.backendError('put', key, err);
    }
    return { key, size: sink.bytes, sha256: sink.digest() };
  }

  /**
   * The put's temp file, created (`wx`) in the object's directory, made first. A delete removes
   * the directories it empties (rmdir: never one holding a file), which may take this one between
   * the two steps: then both again. Once the temp file is in, the directory stays until the
   * rename.
   */
  private async createTempBeside(file: string): Promise<{ tmp: string; fh: FileHandle }> {
    const dir = path.dirname(file);
    const tmp = path.join(dir, `.${path.basename(file)}.${randomBytes(8).toString('hex')}${PUT_TEMP_SUFFIX}`);
    for (let attempt = 1; ; attempt++) {
      try {
        await mkdir(dir, { recursive: true });
        await this.assertInsideRoot(dir);
        return { tmp, fh: await open(tmp, 'wx', 0o644) };
      } catch (err) {
        if (!isNoEntry(err) || attempt === TEMP_ATTEMPTS) throw err;
      }
    }
  }

  async get(key: string, opts: GetOptions = {}): Promise<GetResult> {
    const file = this.pathFor(key);
    let fh: FileHandle;
    try {
      // O_NOFOLLOW: a symlink planted under root is not followed out of it.
      fh = await open(file, constants.O_RDONLY | constants.O_NOFOLLOW);
    } catch (err) {
      throw this.backendError('get', key, err);
    }
    try {
      const st = await fh.stat();
      if (!st.isFile()) throw new AppError('not_found', `object "${key}" not found`);
      await this.assertInsideRoot(path.dirname(file));
      if (opts.range) {
        const range = resolveRange(opts.range, st.size);
        const body = fh.createReadStream({ start: range.start, end: range.end });
        return { body, size: st.size, contentLength: range.end - range.start + 1, range };
      }
      return { body: fh.createReadStream(), size: st.size, contentLength: st.size };
    } catch (err) {
      await fh.close().catch(() => undefined);
      throw this.backendError('get', key, err);
    }
  }

  async head(key: string): Promise<ObjectInfo | undefined> {
    const file = this.pathFor(key);
    try {
      const st = await lstat(file);
      return st.isFile() ? { size: st.size } : undefined;
    } catch (err) {
      if (isNoEntry(err)) return undefined;
      throw this.backendError('head', key, err);
    }
  }

  async *list(prefix: string): AsyncIterable<ListedObject> {
    // A prefix is a directory here: `cache/p1/` lists everything below root/cache/p1.
    const base = prefix.replace(/\/+$/, '');
    const dirs = [this.pathFor(base)];
    for (let dir = dirs.pop(); dir !== undefined; dir = dirs.pop()) {
      // One directory at a time: a delete removes the directories it empties, and a recursive
      // readdir fails whole when one goes while it walks.
      const entries = await readdir(dir, { withFileTypes: true }).catch((err: unknown) => {
        if (isNoEntry(err)) return [];
        throw this.backendError('list', prefix, err);
      });
      for (const e of entries) {
        const file = path.join(dir, e.name);
        if (e.isDirectory()) dirs.push(file);
        // Half-written puts are not objects yet.
        if (!e.isFile() || PUT_TEMP_FILE.test(e.name)) continue;
        const st = await lstat(file).catch(() => undefined);
        if (!st) continue; // deleted meanwhile
        const key = path.relative(this.root, file).split(path.sep).join('/');
        yield { key, size: st.size, lastModified: st.mtime };
      }
    }
  }

  async delete(key: string): Promise<void> {
    const file = this.pathFor(key);
    try {
      await unlink(file);
      await this.removeEmptiedDirs(path.dirname(file));
    } catch (err) {
      if (isNoEntry(err)) return;
      const code = errnoCode(err);
      // A "directory" is a key prefix, not an object: nothing to delete.
      if (
        (code === 'EISDIR' || code === 'EPERM') &&
        (await lstat(file).then(
          (s) => s.isDirectory(),
          () => false,
        ))
      )
        return;
      throw this.backendError('delete', key, err);
    }
  }

  /**
   * Removes `dir` and the directories above it, up to the root, while they are empty: each build
   * leaves a directory per artifact otherwise. rmdir refuses one that holds anything, a put's
   * temp file included (createTempBeside).
   */
  private async removeEmptiedDirs(dir: string): Promise<void> {
    for (let d = dir; d.startsWith(this.root + path.sep); d = path.dirname(d)) {
      if (
        !(await rmdir(d).then(
          () => true,
          () => false,
        ))
      )
        return;
    }
  }

  async signedUrl(key: string, opts: { expiresInSeconds: number; filename?: string }): Promise<string> {
    validateKey(key);
    if (!Number.isFinite(opts.expiresInSeconds) || opts.expiresInSeconds <= 0) {
      throw new AppError('invalid_request', 'expiresInSeconds must be a positive number');
    }
    const expires = Math.floor(Date.now() / 1000) + Math.ceil(opts.expiresInSeconds);
    const filename = opts.filename ?? '';
    const sig = localSignature(this.signingKey, 'GET', key, expires, filename);
    const query = new URLSearchParams({ expires: String(expires) });
    if (opts.filename !== undefined) query.set('filename', opts.filename);
    query.set('sig', sig);
    const pathPart = key.split('/').map(encodeURIComponent).join('/');
    return `${this.publicBaseUrl}${LOCAL_FILES_PATH}${pathPart}?${query.toString()}`;
  }

  async check(): Promise<void> {
    const probe = path.join(this.root, `.kiln-probe-${randomBytes(6).toString('hex')}`);
    try {
      await mkdir(this.root, { recursive: true });
      await writeFile(probe, 'ok', { flag: 'wx' });
      await unlink(probe);
    } catch (err) {
      await rm(probe, { force: true }).catch(() => undefined);
      throw new AppError(
        'unavailable',
        `local storage directory ${this.root} is not writable: ${messageOf(err)}`,
        {
          cause: err,
        },
      );
    }
  }

  private async assertInsideRoot(dir: string): Promise<void> {
    this.realRoot ??= await realpath(this.root);
    const real = await realpath(dir);
    if (real !== this.realRoot && !real.startsWith(this.realRoot + path.sep)) {
      throw new AppError('forbidden', 'storage path resolves outside the storage root');
    }
  }

  private backendError(op: string, key: string, err: unknown): unknown {
    if (err instanceof AppError) return err;
    const code = errnoCode(err);
    if (code === undefined) return err; // not a filesystem error: not ours to translate
    if (op !== 'put' && (isNoEntry(err) || code === 'ELOOP' || code === 'EISDIR')) {
      return new AppError('not_found', `object "${key}" not found`, { cause: err });
    }
    return new AppError('unavailable', `local storage ${op} "${key}" failed: ${messageOf(err)}`, {
      cause: err,
    });
  }
}

export interface LocalSignatureParams {
  key: string;
  /** Unix seconds, as in the URL's `expires`. */
  expires: string | number;
  filename?: string | undefined;
  sig: string;
  /** The request method; the URL is signed for GET (pass 'GET' for HEAD requests too). */
  method?: string;
}

/**
 * Checks a local download URL's query (`expires`, `filename`, `sig`) against its key. Throws
 * AppError('forbidden') when anything was altered or the URL expired; returns the verified values.
 * `now` is in milliseconds (Date.now()).
 */
export function verifyLocalSignature(
  params: LocalSignatureParams,
  signingKey: string | Buffer,
  now: number = Date.now(),
): { key: string; expires: number; filename?: string } {
  const { key, sig } = params;
  const expiresText = String(params.expires);
  const forbidden = (why: string) => new AppError('forbidden', `download link is not valid: ${why}`);
  try {
    validateKey(key);
  } catch {
    throw forbidden('bad key');
  }
  if (!/^\d{1,15}$/.test(expiresText)) throw forbidden('bad expiry');
  if (typeof sig !== 'string' || !/^[0-9a-f]{64}$/i.test(sig)) throw forbidden('bad signature');
  const expires = Number(expiresText);
  const expected = Buffer.from(
    localSignature(
      toKeyBuffer(signingKey),
      (params.method ?? 'GET').toUpperCase(),
      key,
      expires,
      params.filename ?? '',
    ),
    'hex',
  );
  if (!timingSafeEqual(expected, Buffer.from(sig, 'hex'))) throw forbidden('signature does not match');
  if (now / 1000 > expires) throw forbidden('link expired');
  return { key, expires, ...(params.filename !== undefined ? { filename: params.filename } : {}) };
}

/** HMAC-SHA256 hex over method, key, expires and filename (newline-separated; only filename may hold newlines and it is last). */
function localSignature(
  signingKey: Buffer,
  method: string,
  key: string,
  expires: number,
  filename: string,
): string {
  return createHmac('sha256', signingKey).update(`${method}\n${key}\n${expires}\n${filename}`).digest('hex');
}

function toKeyBuffer(key: string | Buffer): Buffer {
  const buf = typeof key === 'string' ? Buffer.from(key, 'utf8') : key;
  if (buf.length < 16) throw new Error('local storage signingKey must be at least 16 bytes');
  return buf;
}

function errnoCode(err: unknown): string | undefined {
  if (err && typeof err === 'object' && 'syscall' in err && 'code' in err && typeof err.code === 'string') {
    return err.code;
  }
  return undefined;
}

function isNoEntry(err: unknown): boolean {
  const code = errnoCode(err);
  return code === 'ENOENT' || code === 'ENOTDIR';
}

function messageOf(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

/** Destroys the sink (if not already) and waits until its file handle is closed. */
function closeSink(sink: HashingFileSink): Promise<void> {
  if (sink.closed) return Promise.resolve();
  return new Promise((resolve) => {
    sink.once('close', () => resolve());
    sink.destroy();
  });
}
