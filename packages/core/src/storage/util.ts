import { createHash, type Hash } from 'node:crypto';
import { type Readable, Transform, type TransformCallback } from 'node:stream';
import { AppError, isAppError } from '../errors.js';
import type { GetResult, ObjectStorage } from './types.js';

/**
 * The object, or undefined when there is none. Any other failure (storage unreachable) is thrown:
 * taken for "none", it would answer an empty log or no steps with a 200.
 */
export async function getIfStored(storage: ObjectStorage, key: string): Promise<GetResult | undefined> {
  try {
    return await storage.get(key);
  } catch (err) {
    if (isAppError(err) && err.code === 'not_found') return undefined;
    throw err;
  }
}

/** Longest key accepted (S3's own limit is 1024 bytes; keys here are ASCII). */
export const MAX_KEY_LENGTH = 1024;

const SEGMENT = /^[A-Za-z0-9_][A-Za-z0-9._:-]*$/;

/**
 * Object keys are the same on every backend: `/`-separated segments of `[A-Za-z0-9._:-]`, each
 * starting with a letter, digit or `_` (so no `.`, `..`, hidden names, empty segments, absolute
 * paths or backslashes). `:` is for BuildKit's cache blobs (`blobs/sha256:<hex>`). Returns the key; throws AppError('invalid_request') otherwise.
 */
export function validateKey(key: unknown): string {
  if (typeof key !== 'string' || key.length === 0) {
    throw new AppError('invalid_request', 'storage key must be a non-empty string');
  }
  if (key.length > MAX_KEY_LENGTH) {
    throw new AppError('invalid_request', `storage key is longer than ${MAX_KEY_LENGTH} characters`);
  }
  for (const segment of key.split('/')) {
    if (!SEGMENT.test(segment)) {
      throw new AppError(
        'invalid_request',
        `storage key "${printable(key)}" is not allowed: use "/"-separated segments of letters, digits, ".", "_", ":" and "-" that do not start with "." (no "..", no leading "/")`,
      );
    }
  }
  return key;
}

function printable(s: string): string {
  const cut = s.length > 100 ? `${s.slice(0, 100)}…` : s;
  return cut.replace(/[^\x20-\x7e]/g, '?');
}

/**
 * `Content-Disposition: attachment` for a download name: an ASCII fallback plus RFC 5987
 * `filename*` for anything else. Quotes, backslashes and control characters never reach the header.
 */
export function contentDisposition(filename: string): string {
  const base = stripControlCharacters(filename.replace(/[/\\]/g, '_'));
  const ascii = base.replace(/[^\x20-\x7e]/g, '_').replace(/["%]/g, '_') || 'download';
  const encoded = encodeURIComponent(base).replace(
    /['()*]/g,
    (c) => `%${c.charCodeAt(0).toString(16).toUpperCase()}`,
  );
  return ascii === base
    ? `attachment; filename="${ascii}"`
    : `attachment; filename="${ascii}"; filename*=UTF-8''${encoded}`;
}

/** Pass-through that sha256-hashes and counts what flows through it. */
export class HashingCounter extends Transform {
  private readonly hash: Hash = createHash('sha256');
  bytes = 0;

  override _transform(chunk: Buffer | string, encoding: BufferEncoding, callback: TransformCallback): void {
    const buf = typeof chunk === 'string' ? Buffer.from(chunk, encoding) : chunk;
    this.hash.update(buf);
    this.bytes += buf.length;
    callback(null, buf);
  }

  /** Hex digest; call once, after the stream ended. */
  digest(): string {
    return this.hash.digest('hex');
  }
}

/** The error to reject with when `signal` aborted. */
export function abortReason(signal: AbortSignal): unknown {
  return signal.reason ?? Object.assign(new Error('The operation was aborted'), { name: 'AbortError' });
}

/** Validates a range against the object's size; returns the inclusive range actually served. */
export function resolveRange(
  range: { start: number; end?: number },
  size: number,
): { start: number; end: number } {
  const { start, end } = range;
  if (
    !Number.isSafeInteger(start) ||
    start < 0 ||
    (end !== undefined && (!Number.isSafeInteger(end) || end < start))
  ) {
    throw new AppError('invalid_request', `invalid byte range ${start}-${end ?? ''}`);
  }
  if (start >= size) {
    throw new AppError(
      'range_not_satisfiable',
      `byte range ${start}-${end ?? ''} is not satisfiable: the object has ${size} bytes`,
    );
  }
  return { start, end: Math.min(end ?? size - 1, size - 1) };
}

/** Destroys a stream the caller handed over (a put owns its body), without an unhandled 'error'. */
export function destroyQuietly(body: NodeJS.ReadableStream | Readable): void {
  const s = body as Partial<Readable>;
  if (typeof s.destroy === 'function') {
    s.on?.('error', () => undefined);
    s.destroy();
  }
}

function stripControlCharacters(s: string): string {
  let out = '';
  for (const ch of s) {
    const code = ch.charCodeAt(0);
    if (code >= 0x20 && code !== 0x7f) out += ch;
  }
  return out;
}
