/**
 * Streaming validation of an uploaded build context.
 *
 *   upload bytes ──► ContextValidationStream ──► uncompressed tar bytes (unchanged) ──► storage
 *                        │ sniff: gzip (1f 8b) → inflate, else tar
 *                        │ tar header parser + path tree (tar.ts): names, types, links, limits
 *                        │ sha256 of the tar bytes
 *                        └► result: ContextSummary (or the first AppError)
 *
 * The stream never holds more than a chunk or two: it pushes each piece of tar as soon as it has been
 * checked and honours the reader's backpressure (the inflater is paused while our readable side is
 * full, and the writable side is not acknowledged until the inflater has taken the input).
 */
import { createHash, type Hash } from 'node:crypto';
import { Transform, type TransformCallback } from 'node:stream';
import { createGunzip, type Gunzip } from 'node:zlib';
import { dockerfileInContext } from '@kiln/contract';
import { AppError } from '../errors.js';
import { type ContextLimits, resolveContextLimits } from './limits.js';
import { DIRECTIVE_HEAD_BYTES, type FrontendDirective, frontendDirective } from './syntax-directive.js';
import { quote, type TarEvent, TarParser } from './tar.js';

export interface ContextSummary {
  /** sha256 (hex) of the uncompressed tar bytes: the content address of the stored context. */
  sha256: string;
  /** Uncompressed tar bytes. */
  size: number;
  /** Bytes received (equal to `size` for an uncompressed upload). */
  compressedSize: number;
  /** Entries in the archive. */
  entries: number;
  compressed: boolean;
  /** What the Dockerfile's start says about its frontend (`# syntax=`). */
  frontend: FrontendDirective;
}

export interface ContextValidatorOptions {
  /** Overrides of DEFAULT_CONTEXT_LIMITS. */
  limits?: Partial<ContextLimits>;
  /** Dockerfile path inside the context (the spec's `file`); default `Dockerfile`. */
  dockerfilePath?: string;
}

export interface ContextValidator {
  /** Write the upload in, read the uncompressed tar out. Errors (destroys) with the first AppError. */
  stream: ContextValidationStream;
  /**
   * Resolves once the stream has ended successfully; rejects with the same error the stream fails with.
   * (A rejection handler is attached already, so ignoring `result` on failure is safe.)
   */
  result: Promise<ContextSummary>;
}

/**
 * Validates a context upload while passing its tar bytes through, e.g.
 *
 * ```ts
 * const { stream, result } = createContextValidator({ limits, dockerfilePath: spec.file });
 * await pipeline(request.raw, stream, storage.writeStream(tmpKey));   // throws the AppError
 * const { sha256, size } = await result;                               // then store under sha256
 * ```
 *
 * Throws `invalid_spec` synchronously when `dockerfilePath` is not a path inside the context.
 */
export function createContextValidator(options: ContextValidatorOptions = {}): ContextValidator {
  const stream = new ContextValidationStream(options);
  return { stream, result: stream.result };
}

type Mode = 'sniff' | 'tar' | 'gzip';

const SNIFF_BYTES = 6;
/** Formats people send by mistake: recognised so the 415 can say what was sent. */
const OTHER_FORMATS: [magic: number[], name: string][] = [
  [[0x50, 0x4b, 0x03, 0x04], 'a zip archive'],
  [[0x50, 0x4b, 0x05, 0x06], 'an (empty) zip archive'],
  [[0x42, 0x5a, 0x68], 'bzip2-compressed data'],
  [[0xfd, 0x37, 0x7a, 0x58, 0x5a, 0x00], 'xz-compressed data'],
  [[0x28, 0xb5, 0x2f, 0xfd], 'zstd-compressed data'],
  [[0x37, 0x7a, 0xbc, 0xaf, 0x27, 0x1c], 'a 7-zip archive'],
];

export class ContextValidationStream extends Transform {
  readonly result: Promise<ContextSummary>;
  /** Bytes received so far. */
  compressedBytes = 0;
  /** Tar bytes produced so far (inflated, for gzip input). */
  uncompressedBytes = 0;

  private readonly limits: ContextLimits;
  private readonly dockerfilePath: string;
  private readonly hash: Hash = createHash('sha256');
  private parser: TarParser | null = null;
  private mode: Mode = 'sniff';
  private sniffed: Buffer = Buffer.alloc(0);
  private gunzip: Gunzip | null = null;
  private gunzipPaused = false;
  private settle!: { resolve: (summary: ContextSummary) => void; reject: (err: Error) => void };
  private settled = false;
  /** The start of the Dockerfile's (last) entry, for its frontend directive. */
  private dockerfileHead: { chunks: Buffer[]; bytes: number; size: number } | undefined;
  private capturing = false;
  private readonly watchDockerfile = (event: TarEvent): void => {
    if (event.type === 'entry') {
      this.capturing = event.entry.name === this.dockerfilePath && event.entry.type === 'file';
      if (this.capturing) this.dockerfileHead = { chunks: [], bytes: 0, size: event.entry.size };
    } else if (event.type === 'data' && this.capturing && this.dockerfileHead) {
      const head = this.dockerfileHead;
      const take = Math.min(event.chunk.length, DIRECTIVE_HEAD_BYTES - head.bytes);
      // Copied: the chunk is a view into a buffer the stream reuses.
      if (take > 0) head.chunks.push(Buffer.from(event.chunk.subarray(0, take)));
      head.bytes += Math.max(0, take);
    } else if (event.type === 'entry-end') {
      this.capturing = false;
    }
  };

  constructor(options: ContextValidatorOptions = {}) {
    super();
    this.limits = resolveContextLimits(options.limits);
    this.dockerfilePath = normalizeDockerfilePath(options.dockerfilePath ?? 'Dockerfile');
    this.result = new Promise<ContextSummary>((resolve, reject) => {
      this.settle = { resolve, reject };
    });
    this.result.catch(() => {});
  }

  override _transform(chunk: Buffer, _encoding: BufferEncoding, callback: TransformCallback): void {
    try {
      this.compressedBytes += chunk.length;
      let input = chunk;
      if (this.mode === 'sniff') {
        this.sniffed = this.sniffed.length ? Buffer.concat([this.sniffed, chunk]) : chunk;
        if (this.sniffed.length < SNIFF_BYTES) {
          callback();
          return;
        }
        input = this.sniffed;
        this.sniffed = Buffer.alloc(0);
        this.decide(input);
      }
      this.accept(input, callback);
    } catch (err) {
      callback(err as Error);
    }
  }

  override _flush(callback: TransformCallback): void {
    try {
      if (this.mode === 'sniff') {
        if (this.sniffed.length === 0) {
          throw new AppError(
            'invalid_context',
            'the context is empty (0 bytes); send a tar archive or a gzip-compressed tar archive',
          );
        }
        const input = this.sniffed;
        this.sniffed = Buffer.alloc(0);
        this.decide(input);
        this.accept(input, (err) => {
          if (err) callback(err);
          else this.finishInput(callback);
        });
        return;
      }
      this.finishInput(callback);
    } catch (err) {
      callback(err as Error);
    }
  }

  override _read(size: number): void {
    if (this.gunzipPaused && this.gunzip) {
      this.gunzipPaused = false;
      this.gunzip.resume();
    }
    super._read(size);
  }

  override _destroy(error: Error | null, callback: (error: Error | null) => void): void {
    this.gunzip?.destroy();
    this.gunzip = null;
    this.parser = null;
    if (!this.settled) {
      this.settled = true;
      this.settle.reject(
        error ?? new AppError('invalid_context', 'the context upload was aborted before it ended'),
      );
    }
    callback(error);
  }

  private decide(head: Buffer): void {
    if (head[0] === 0x1f && head[1] === 0x8b) {
      this.mode = 'gzip';
      this.parser = new TarParser({
        limits: this.limits,
        emitData: true,
        notTarMessage: 'the gzip-compressed data is not a tar archive (no valid tar header at its start)',
      });
      const gunzip = createGunzip();
      gunzip.on('data', (out: Buffer) => this.onInflated(out, gunzip));
      gunzip.on('error', (err: Error & { code?: string }) => {
        const truncated = err.code === 'Z_BUF_ERROR' || /unexpected end/i.test(err.message);
        this.destroy(
          new AppError(
            'invalid_context',
            truncated ? 'the gzip stream is truncated' : `the gzip data is corrupt: ${err.message}`,
            { cause: err },
          ),
        );
      });
      this.gunzip = gunzip;
      return;
    }
    for (const [magic, name] of OTHER_FORMATS) {
      if (magic.every((byte, i) => head[i] === byte)) {
        throw new AppError(
          'unsupported_media_type',
          `the context is ${name}; send a tar archive or a gzip-compressed tar archive`,
        );
      }
    }
    this.mode = 'tar';
    this.parser = new TarParser({
      limits: this.limits,
      emitData: true,
      notTarMessage: 'the context is not a tar or gzip archive (no valid tar header at its start)',
    });
  }

  /** Takes input bytes once the format is known; `done` is called when more input may be written. */
  private accept(input: Buffer, done: (err?: Error | null) => void): void {
    if (this.mode === 'tar') {
      this.onTar(input);
      this.push(input);
      done();
      return;
    }
    if (this.compressedBytes > this.limits.maxCompressedBytes) {
      throw new AppError(
        'context_too_large',
        `the compressed context is larger than the limit of ${this.limits.maxCompressedBytes} bytes (maxCompressedBytes)`,
      );
    }
    const gunzip = this.gunzip;
    if (!gunzip) return;
    if (gunzip.write(input)) done();
    else gunzip.once('drain', () => done());
  }

  private onInflated(out: Buffer, gunzip: Gunzip): void {
    if (this.destroyed || gunzip !== this.gunzip) return;
    try {
      // Checked per inflated chunk (16 KiB), against the compressed bytes the inflater has consumed.
      const produced = this.uncompressedBytes + out.length;
      const consumed = Math.max(1, gunzip.bytesWritten);
      const { maxDecompressionRatio, ratioGraceBytes } = this.limits;
      if (produced > ratioGraceBytes && produced > maxDecompressionRatio * consumed) {
        throw new AppError(
          'context_too_large',
          `the context decompresses more than ${maxDecompressionRatio}:1 (maxDecompressionRatio): ${produced} bytes from the first ${consumed} compressed bytes`,
        );
      }
      this.onTar(out);
      if (!this.push(out)) {
        this.gunzipPaused = true;
        gunzip.pause();
      }
    } catch (err) {
      this.destroy(err as Error);
    }
  }

  private onTar(bytes: Buffer): void {
    if (!this.parser) return;
    this.parser.write(bytes, this.watchDockerfile);
    this.uncompressedBytes += bytes.length;
    this.hash.update(bytes);
  }

  private finishInput(callback: TransformCallback): void {
    const gunzip = this.gunzip;
    if (this.mode !== 'gzip' || !gunzip) {
      this.finish(callback);
      return;
    }
    // zlib ends a gzip stream at the end of its last member and drops what follows that is not
    // another member (the zero padding some tools add): by now 'end' may have come and gone.
    if (gunzip.readableEnded) {
      this.finish(callback);
      return;
    }
    gunzip.once('end', () => {
      if (!this.destroyed) this.finish(callback);
    });
    gunzip.end();
  }

  private finish(callback: TransformCallback): void {
    try {
      const parser = this.parser;
      if (!parser) throw new Error('context validator finished without a parser');
      parser.end();
      const kind = parser.tree.kindOf(this.dockerfilePath);
      const where = quote(this.dockerfilePath);
      if (kind === undefined) {
        throw new AppError('invalid_context', `no Dockerfile at ${where} in the context`);
      }
      if (kind !== 'file') {
        throw new AppError(
          'invalid_context',
          `the Dockerfile path ${where} is a ${kind} in the context, not a regular file`,
        );
      }
      const summary: ContextSummary = {
        sha256: this.hash.digest('hex'),
        size: this.uncompressedBytes,
        compressedSize: this.compressedBytes,
        entries: parser.entries,
        compressed: this.mode === 'gzip',
        frontend: this.dockerfileHead
          ? frontendDirective(
              Buffer.concat(this.dockerfileHead.chunks),
              this.dockerfileHead.bytes >= this.dockerfileHead.size,
            )
          : { kind: 'none' },
      };
      this.settled = true;
      this.settle.resolve(summary);
      callback();
    } catch (err) {
      callback(err as Error);
    }
  }
}

/** `./docker/../build/Dockerfile` → `build/Dockerfile`; rejects paths that leave the context. */
export function normalizeDockerfilePath(file: string): string {
  const normalized = dockerfileInContext(file);
  if (normalized === undefined) {
    throw new AppError(
      'invalid_spec',
      `Dockerfile path ${quote(file)} must be a file path inside the context, e.g. Dockerfile or docker/app.Dockerfile`,
    );
  }
  return normalized;
}
