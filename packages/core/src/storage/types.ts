import type { Readable } from 'node:stream';

export interface PutResult {
  key: string;
  size: number;
  /** Hex sha256 of the bytes stored. */
  sha256: string;
}

export interface ObjectInfo {
  size: number;
}

/** One object of a listing. */
export interface ListedObject {
  key: string;
  size: number;
  lastModified: Date;
}

export interface GetOptions {
  /** Inclusive byte range, like HTTP `Range: bytes=start-end`; `end` omitted means "to the last byte". */
  range?: { start: number; end?: number };
}

export interface GetResult {
  body: Readable;
  /** Size of the whole object. */
  size: number;
  /** Bytes `body` will deliver (the range's length for a range get). */
  contentLength: number;
  /** The range actually served (end clamped to the last byte), present only for range gets. */
  range?: { start: number; end: number };
}

export interface PutOptions {
  contentType?: string;
  /** Aborting rejects the put with `signal.reason`; nothing is left behind. */
  signal?: AbortSignal;
}

export interface ObjectStorage {
  readonly kind: 's3' | 'local';
  /**
   * Streams body into the object; hashes (sha256) and counts on the way; never buffers it whole.
   * On any failure no object (and no partial multipart upload) remains. Errors raised by `body`
   * itself (e.g. an upstream validator's AppError) are rethrown unchanged; backend failures become
   * AppError('unavailable').
   */
  put(key: string, body: NodeJS.ReadableStream | Readable, opts?: PutOptions): Promise<PutResult>;
  /** `put` of a local file's content (the file is left as it is). */
  putFile(key: string, file: string, opts?: PutOptions): Promise<PutResult>;
  /** AppError('not_found') when missing, AppError('invalid_request') for an unsatisfiable range. */
  get(key: string, opts?: GetOptions): Promise<GetResult>;
  head(key: string): Promise<ObjectInfo | undefined>;
  /** Idempotent: deleting a missing key succeeds. */
  delete(key: string): Promise<void>;
  /** Every object whose key starts with `prefix` (a `dir/` prefix), in pages, in no set order. */
  list(prefix: string): AsyncIterable<ListedObject>;
  /** A download URL valid for `expiresInSeconds`; `filename` sets Content-Disposition. */
  signedUrl(key: string, opts: { expiresInSeconds: number; filename?: string }): Promise<string>;
  /** Readiness probe: throws AppError('unavailable') when the backend can't be used. */
  check(): Promise<void>;
  /**
   * Removes what puts of a killed process left under the key prefixes `under` (`dir/`; temp
   * files, open multipart uploads) that nothing touched for `olderThanMs`; returns their keys or
   * files.
   */
  removeAbandonedPuts(under: readonly string[], olderThanMs: number): Promise<string[]>;
}
