import { createReadStream } from 'node:fs';
import type { Readable } from 'node:stream';
import { pipeline } from 'node:stream';
import {
  AbortMultipartUploadCommand,
  DeleteObjectCommand,
  GetObjectCommand,
  type GetObjectCommandOutput,
  HeadBucketCommand,
  HeadObjectCommand,
  ListMultipartUploadsCommand,
  ListObjectsV2Command,
  type ListObjectsV2CommandOutput,
  ListPartsCommand,
  S3Client,
  type S3ClientConfig,
} from '@aws-sdk/client-s3';
import { Upload } from '@aws-sdk/lib-storage';
import { getSignedUrl } from '@aws-sdk/s3-request-presigner';
import { AppError } from '../errors.js';
import type {
  GetOptions,
  GetResult,
  ListedObject,
  ObjectInfo,
  ObjectStorage,
  PutOptions,
  PutResult,
} from './types.js';
import { abortReason, contentDisposition, destroyQuietly, HashingCounter, validateKey } from './util.js';

/** Minimal logger (pino-compatible) for problems that do not fail the call, e.g. a cleanup that could not finish. */
export interface StorageLogger {
  warn(obj: object, msg?: string): void;
}

export interface S3StorageOptions {
  /** e.g. `http://127.0.0.1:9000` for MinIO; omit for AWS. */
  endpoint?: string;
  region: string;
  bucket: string;
  /** Static credentials; when both are omitted the SDK's default provider chain is used. */
  accessKeyId?: string;
  secretAccessKey?: string;
  /** `true` for MinIO and most S3-compatible servers. */
  forcePathStyle: boolean;
  /** Key prefix inside the bucket ("kiln" → objects under `kiln/`). */
  prefix?: string;
  /** Multipart part size (default 8 MiB; min 5 MiB). Objects can have at most 10 000 parts (≈ 78 GiB at 8 MiB). */
  partSize?: number;
  /** Parts uploaded concurrently (default 2). Memory held ≈ (queueSize + 1) × partSize. */
  queueSize?: number;
  /** Attempts per request, first included (default 3). */
  maxAttempts?: number;
  /** TCP connect timeout (default 3 000 ms). */
  connectTimeoutMs?: number;
  /** A request whose socket sees no traffic for this long fails (default 30 000 ms). */
  socketTimeoutMs?: number;
  /** After a put, HEAD the object and compare its size with the bytes streamed (default true). */
  verifySize?: boolean;
  logger?: StorageLogger;
}

export const DEFAULT_PART_SIZE = 8 * 1024 * 1024;

/** How long an aborted put waits for its requests in flight before it drops them. */
const ABORT_GRACE_MS = 5_000;

/**
 * Objects in an S3 bucket (AWS, MinIO, any S3-compatible server). Puts go through lib-storage's
 * multipart `Upload`, streaming with memory bounded by `(queueSize + 1) × partSize`; a failed put
 * aborts its multipart upload and checks (ListParts) that the upload is gone.
 */
export class S3Storage implements ObjectStorage {
  readonly kind = 's3' as const;
  readonly bucket: string;
  readonly client: S3Client;
  private readonly prefix: string;
  private readonly partSize: number;
  private readonly queueSize: number;
  private readonly verifySize: boolean;
  private readonly logger: StorageLogger | undefined;
  private readonly where: string;

  constructor(opts: S3StorageOptions) {
    if (!opts.bucket) throw new Error('S3Storage: bucket is required');
    if ((opts.accessKeyId === undefined) !== (opts.secretAccessKey === undefined)) {
      throw new Error('S3Storage: give both accessKeyId and secretAccessKey, or neither');
    }
    this.bucket = opts.bucket;
    this.prefix = (opts.prefix ?? '').replace(/^\/+|\/+$/g, '');
    this.partSize = opts.partSize ?? DEFAULT_PART_SIZE;
    this.queueSize = opts.queueSize ?? 2;
    this.verifySize = opts.verifySize ?? true;
    this.logger = opts.logger;
    this.where = `s3://${opts.bucket}${opts.endpoint ? ` at ${opts.endpoint}` : ''}`;
    const config: S3ClientConfig = {
      region: opts.region,
      forcePathStyle: opts.forcePathStyle,
      // S3-compatible servers store streamed bodies with aws-chunked framing (and CRC trailers) inside
      // the object unless checksums are only sent where the API requires them.
      requestChecksumCalculation: 'WHEN_REQUIRED',
      responseChecksumValidation: 'WHEN_REQUIRED',
      maxAttempts: opts.maxAttempts ?? 3,
      requestHandler: {
        connectionTimeout: opts.connectTimeoutMs ?? 3_000,
        socketTimeout: opts.socketTimeoutMs ?? 30_000,
      },
      ...(opts.endpoint ? { endpoint: opts.endpoint } : {}),
      ...(opts.accessKeyId !== undefined && opts.secretAccessKey !== undefined
        ? { credentials: { accessKeyId: opts.accessKeyId, secretAccessKey: opts.secretAccessKey } }
        : {}),
    };
    this.client = new S3Client(config);
  }

  /** The key inside the bucket (prefix applied). */
  objectKey(key: string): string {
    validateKey(key);
    return this.prefix ? `${this.prefix}/${key}` : key;
  }

  putFile(key: string, file: string, opts: PutOptions = {}): Promise<PutResult> {
    return this.put(key, createReadStream(file), opts);
  }

  async put(key: string, body: NodeJS.ReadableStream | Readable, opts: PutOptions = {}): Promise<PutResult> {
    const Key = this.objectKey(key);
    const { signal } = opts;
    if (signal?.aborted) {
      destroyQuietly(body);
      throw abortReason(signal);
    }
    const hasher = new HashingCounter();
    let sourceError: unknown;
    let inputError: unknown;
    // Registered before pipeline's handlers: an error of the caller's stream is rethrown as it is.
    body.on('error', (err: unknown) => {
      sourceError ??= err;
    });
    hasher.on('error', (err: unknown) => {
      inputError ??= err;
    });
    // A source error (or a premature close) destroys `hasher` with that error, which fails the upload.
    pipeline(body, hasher, () => undefined);
    const upload = new Upload({
      client: this.client,
      params: {
        Bucket: this.bucket,
        Key,
        Body: hasher,
        ...(opts.contentType ? { ContentType: opts.contentType } : {}),
      },
      partSize: this.partSize,
      queueSize: this.queueSize,
      leavePartsOnError: false,
    });
    // Aborting ends the input with an error rather than calling upload.abort() first: that way
    // done() settles once in-flight parts have landed, and the multipart abort below finds them.
    // A store that stopped answering gets ABORT_GRACE_MS, not the SDK's timeouts and retries
    // (minutes), before the upload is dropped.
    let grace: NodeJS.Timeout | undefined;
    const onAbort = () => {
      const reason = signal ? abortReason(signal) : undefined;
      hasher.destroy(reason instanceof Error ? reason : new Error(String(reason)));
      grace = setTimeout(() => void upload.abort(), ABORT_GRACE_MS);
    };
    signal?.addEventListener('abort', onAbort, { once: true });
    try {
      await upload.done();
    } catch (err) {
      hasher.destroy(); // stop reading the caller's stream (pipeline destroys it too)
      await upload.abort().catch(() => undefined);
      const removed = this.removeMultipartUpload(Key, upload.uploadId);
      if (signal?.aborted) {
        // Against a store that stopped answering this takes minutes: it goes on unawaited past
        // the grace, and what it leaves, removeAbandonedPuts finds.
        let waited: NodeJS.Timeout | undefined;
        await Promise.race([
          removed,
          new Promise((resolve) => (waited = setTimeout(resolve, ABORT_GRACE_MS))),
        ]);
        clearTimeout(waited);
        throw abortReason(signal);
      }
      await removed;
      if (sourceError !== undefined) throw sourceError;
      if (inputError !== undefined) throw inputError;
      throw this.backendError('put', key, err);
    } finally {
      clearTimeout(grace);
      signal?.removeEventListener('abort', onAbort);
    }

    const size = hasher.bytes;
    const sha256 = hasher.digest();
    if (this.verifySize) await this.verifyStoredSize(key, Key, size);
    return { key, size, sha256 };
  }

  async get(key: string, opts: GetOptions = {}): Promise<GetResult> {
    const Key = this.objectKey(key);
    let Range: string | undefined;
    if (opts.range) {
      const { start, end } = opts.range;
      if (
        !Number.isSafeInteger(start) ||
        start < 0 ||
        (end !== undefined && (!Number.isSafeInteger(end) || end < start))
      ) {
        throw new AppError('invalid_request', `invalid byte range ${start}-${end ?? ''}`);
      }
      Range = `bytes=${start}-${end ?? ''}`;
    }
    let out: GetObjectCommandOutput;
    try {
      out = await this.client.send(
        new GetObjectCommand({ Bucket: this.bucket, Key, ...(Range ? { Range } : {}) }),
      );
    } catch (err) {
      throw this.backendError('get', key, err);
    }
    const body = out.Body as Readable | undefined;
    if (!body) throw new AppError('unavailable', `object storage returned no body for "${key}"`);
    const contentLength = out.ContentLength ?? 0;
    if (!Range) return { body, size: contentLength, contentLength };
    const m = /^bytes (\d+)-(\d+)\/(\d+)$/.exec(out.ContentRange ?? '');
    if (!m) {
      body.destroy();
      throw new AppError(
        'unavailable',
        `object storage ignored the Range of a get of "${key}" (Content-Range: ${out.ContentRange ?? 'none'})`,
      );
    }
    const range = { start: Number(m[1]), end: Number(m[2]) };
    return { body, size: Number(m[3]), contentLength: range.end - range.start + 1, range };
  }

  async head(key: string): Promise<ObjectInfo | undefined> {
    const Key = this.objectKey(key);
    try {
      const out = await this.client.send(new HeadObjectCommand({ Bucket: this.bucket, Key }));
      return { size: out.ContentLength ?? 0 };
    } catch (err) {
      if (isNotFound(err)) return undefined;
      throw this.backendError('head', key, err);
    }
  }

  async *list(prefix: string): AsyncIterable<ListedObject> {
    // A directory-like prefix: its key part is validated like a key, the slash added back.
    const Prefix = `${this.objectKey(prefix.replace(/\/+$/, ''))}/`;
    const strip = Prefix.length - prefix.replace(/\/+$/, '').length - 1;
    let ContinuationToken: string | undefined;
    do {
      let out: ListObjectsV2CommandOutput;
      try {
        out = await this.client.send(
          new ListObjectsV2Command({ Bucket: this.bucket, Prefix, ContinuationToken }),
        );
      } catch (err) {
        throw this.backendError('list', prefix, err);
      }
      for (const o of out.Contents ?? []) {
        if (o.Key)
          yield { key: o.Key.slice(strip), size: o.Size ?? 0, lastModified: o.LastModified ?? new Date(0) };
      }
      ContinuationToken = out.NextContinuationToken;
    } while (ContinuationToken);
  }

  async delete(key: string): Promise<void> {
    const Key = this.objectKey(key);
    try {
      await this.client.send(new DeleteObjectCommand({ Bucket: this.bucket, Key }));
    } catch (err) {
      if (isNotFound(err)) return;
      throw this.backendError('delete', key, err);
    }
  }

  async signedUrl(key: string, opts: { expiresInSeconds: number; filename?: string }): Promise<string> {
    const Key = this.objectKey(key);
    if (!Number.isFinite(opts.expiresInSeconds) || opts.expiresInSeconds <= 0) {
      throw new AppError('invalid_request', 'expiresInSeconds must be a positive number');
    }
    const command = new GetObjectCommand({
      Bucket: this.bucket,
      Key,
      ...(opts.filename !== undefined
        ? { ResponseContentDisposition: contentDisposition(opts.filename) }
        : {}),
    });
    try {
      return await getSignedUrl(this.client, command, { expiresIn: Math.ceil(opts.expiresInSeconds) });
    } catch (err) {
      throw this.backendError('sign', key, err);
    }
  }

  async check(): Promise<void> {
    try {
      await this.client.send(new HeadBucketCommand({ Bucket: this.bucket }));
    } catch (err) {
      const why = isNotFound(err) ? 'bucket does not exist' : describe(err);
      throw new AppError('unavailable', `object storage ${this.where} is not usable: ${why}`, { cause: err });
    }
  }

  /**
   * Aborts the multipart uploads under `under` (below this storage's prefix) with no part
   * written for `olderThanMs`: a worker killed mid-export leaves its upload open, and an open
   * upload's parts are stored (and billed) until it is aborted. Uploads elsewhere in the bucket
   * are not Kiln's. Returns their keys.
   */
  async removeAbandonedPuts(under: readonly string[], olderThanMs: number): Promise<string[]> {
    const cutoff = Date.now() - olderThanMs;
    const removed: string[] = [];
    for (const dir of under) {
      const Prefix = `${this.objectKey(dir.replace(/\/+$/, ''))}/`;
      let markers: { KeyMarker?: string; UploadIdMarker?: string } = {};
      for (;;) {
        const out = await this.client
          .send(new ListMultipartUploadsCommand({ Bucket: this.bucket, Prefix, ...markers }))
          .catch((err: unknown) => {
            throw this.backendError('list uploads', dir, err);
          });
        for (const u of out.Uploads ?? []) {
          if (!u.Key || !u.UploadId || !u.Initiated || u.Initiated.getTime() > cutoff) continue;
          // Completed or aborted since it was listed: nothing left to remove, the others still are.
          const last = await this.lastPartWritten(u.Key, u.UploadId).catch((err: unknown) => {
            if (isNoSuchUpload(err)) return undefined;
            throw this.backendError('list parts', u.Key ?? dir, err);
          });
          if (last === undefined || last > cutoff) continue;
          await this.removeMultipartUpload(u.Key, u.UploadId);
          removed.push(u.Key);
        }
        if (!out.IsTruncated) break;
        markers = {
          ...(out.NextKeyMarker ? { KeyMarker: out.NextKeyMarker } : {}),
          ...(out.NextUploadIdMarker ? { UploadIdMarker: out.NextUploadIdMarker } : {}),
        };
      }
    }
    return removed;
  }

  /** When the upload's newest part was written (0: none yet), so a slow upload still at work is left alone. */
  private async lastPartWritten(Key: string, UploadId: string): Promise<number> {
    let newest = 0;
    let PartNumberMarker: string | undefined;
    do {
      const out = await this.client.send(
        new ListPartsCommand({ Bucket: this.bucket, Key, UploadId, PartNumberMarker }),
      );
      for (const p of out.Parts ?? []) newest = Math.max(newest, p.LastModified?.getTime() ?? 0);
      PartNumberMarker = out.IsTruncated ? out.NextPartNumberMarker : undefined;
    } while (PartNumberMarker);
    return newest;
  }

  /** Releases the client's sockets. */
  close(): void {
    this.client.destroy();
  }

  /**
   * Aborts a multipart upload and confirms with ListParts that it is gone (S3 may need more than
   * one abort while parts are still landing). Failures are logged: the put already failed.
   */
  private async removeMultipartUpload(Key: string, UploadId: string | undefined): Promise<void> {
    if (!UploadId) return; // single PutObject, or CreateMultipartUpload never succeeded
    const ids = { Bucket: this.bucket, Key, UploadId };
    for (let attempt = 1; attempt <= 3; attempt++) {
      try {
        await this.client.send(new AbortMultipartUploadCommand(ids));
      } catch (err) {
        if (!isNoSuchUpload(err)) {
          this.logger?.warn(
            { err, key: Key, uploadId: UploadId, attempt },
            'could not abort multipart upload',
          );
          if (attempt === 3) return;
          continue;
        }
      }
      try {
        await this.client.send(new ListPartsCommand({ ...ids, MaxParts: 1 }));
        // The upload still exists: abort again.
      } catch (err) {
        if (isNoSuchUpload(err)) return; // verified: nothing left
        this.logger?.warn(
          { err, key: Key, uploadId: UploadId },
          'multipart upload aborted; the server cannot confirm it with ListParts',
        );
        return;
      }
    }
    this.logger?.warn({ key: Key, uploadId: UploadId }, 'multipart upload still listed after 3 aborts');
  }

  private async verifyStoredSize(key: string, Key: string, size: number): Promise<void> {
    let stored: number | undefined;
    try {
      stored = (await this.client.send(new HeadObjectCommand({ Bucket: this.bucket, Key }))).ContentLength;
    } catch (err) {
      this.logger?.warn({ err, key: Key }, 'stored, but could not HEAD the object to verify its size');
      return;
    }
    if (stored !== undefined && stored !== size) {
      await this.client.send(new DeleteObjectCommand({ Bucket: this.bucket, Key })).catch(() => undefined);
      throw new AppError(
        'internal',
        `object storage stored ${stored} bytes for "${key}" but ${size} were sent (is the server adding checksum framing?)`,
      );
    }
  }

  private backendError(op: string, key: string, err: unknown): AppError {
    if (err instanceof AppError) return err;
    if (op !== 'put' && isNotFound(err))
      return new AppError('not_found', `object "${key}" not found`, { cause: err });
    if (nameOf(err) === 'InvalidRange' || statusOf(err) === 416) {
      return new AppError('range_not_satisfiable', `byte range not satisfiable for "${key}"`, { cause: err });
    }
    return new AppError(
      'unavailable',
      `object storage ${this.where}: ${op} "${key}" failed: ${describe(err)}`,
      {
        cause: err,
      },
    );
  }
}

function statusOf(err: unknown): number | undefined {
  const meta = (err as { $metadata?: { httpStatusCode?: number } } | null)?.$metadata;
  return meta?.httpStatusCode;
}

function nameOf(err: unknown): string | undefined {
  return err instanceof Error ? err.name : undefined;
}

/** The object is not there; a missing bucket is a misconfigured or broken store, not a missing object. */
function isNotFound(err: unknown): boolean {
  const name = nameOf(err);
  if (name === 'NoSuchBucket') return false;
  return name === 'NotFound' || name === 'NoSuchKey' || statusOf(err) === 404;
}

function isNoSuchUpload(err: unknown): boolean {
  return nameOf(err) === 'NoSuchUpload' || statusOf(err) === 404;
}

function describe(err: unknown): string {
  if (!(err instanceof Error)) return String(err);
  const code = (err as { code?: unknown }).code;
  const status = statusOf(err);
  const parts = [
    err.name !== 'Error' ? err.name : undefined,
    typeof code === 'string' ? code : undefined,
    status ? `HTTP ${status}` : undefined,
  ].filter((p): p is string => p !== undefined && p !== '');
  const unique = [...new Set(parts)];
  return `${err.message || 'error'}${unique.length ? ` (${unique.join(', ')})` : ''}`;
}
