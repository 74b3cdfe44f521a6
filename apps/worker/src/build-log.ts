/**
 * A build's progress text: appended to the Redis log stream (`logStreamKey`, entries
 * `{k: 'log', d: text}` batched every ~100 ms; BuildLifecycle writes the `end` entry) for live followers,
 * and to a temp file that becomes the stored log object at the end. Nothing accumulates in memory
 * beyond one batch.
 *
 * Both copies are bounded by `maxBytes` (KILN_MAX_LOG_BYTES): the build output that does not fit is
 * replaced by one truncation marker line. Kiln's own lines (`note`: the attempt, ERROR, CANCELED)
 * may use TAIL_BYTES more, so a truncated log still says how the build ended.
 */

import { once } from 'node:events';
import { createReadStream, createWriteStream, type WriteStream } from 'node:fs';
import { finished } from 'node:stream/promises';
import {
  LOG_STREAM_MAX_ENTRIES,
  LOG_STREAM_TTL_SECONDS,
  type Logger,
  logStreamKey,
  type ObjectStorage,
} from '@kiln/core';
import type { Redis } from 'ioredis';

/** Largest `d` of one stream entry; a bigger batch is split. */
const MAX_ENTRY_CHARS = 64 * 1024;
/** Room past the budget for the truncation marker and kiln's closing lines. */
const TAIL_BYTES = 16 * 1024;

/** `4 MiB`, `256 KiB`, else bytes. */
function formatBytes(n: number): string {
  if (n % 1024 ** 2 === 0) return `${n / 1024 ** 2} MiB`;
  if (n % 1024 === 0) return `${n / 1024} KiB`;
  return `${n} bytes`;
}

/** The longest head of `text` that ends a line and takes at most `room` bytes ('' if none). */
function wholeLinesWithin(text: string, room: number): string {
  const head = Buffer.from(text).subarray(0, Math.max(0, room));
  const cut = head.lastIndexOf(10);
  return cut < 0 ? '' : head.subarray(0, cut + 1).toString('utf8');
}

export interface BuildLogOptions {
  /** Bytes of build output kept (KILN_MAX_LOG_BYTES). */
  maxBytes: number;
  flushMs?: number;
}

export class BuildLog {
  private pending = '';
  private detached = false;
  private timer: NodeJS.Timeout | undefined;
  private chain: Promise<void> = Promise.resolve();
  private readonly file: WriteStream;
  private fileError: Error | undefined;
  private redisFailed = false;
  private closed = false;
  /** Bytes in the file so far (earlier attempts' included). */
  private bytes = 0;
  private truncated = false;
  private readonly maxBytes: number;
  private readonly flushMs: number;

  constructor(
    private readonly redis: Redis,
    readonly buildId: string,
    readonly path: string,
    private readonly logger: Logger,
    options: BuildLogOptions,
  ) {
    this.maxBytes = options.maxBytes;
    this.flushMs = options.flushMs ?? 100;
    this.file = createWriteStream(path, { flags: 'a', mode: 0o600 });
    this.file.on('error', (err) => {
      this.fileError ??= err;
    });
  }

  get streamKey(): string {
    return logStreamKey(this.buildId);
  }

  /**
   * Sends nothing more to the live stream, what is pending included: another run of the build
   * owns it now. The file goes on (it is this run's, and not stored).
   */
  detach(): void {
    clearTimeout(this.timer);
    this.timer = undefined;
    this.pending = '';
    this.detached = true;
  }

  /** Build output: kept while within the budget; the first text past it becomes the truncation marker. */
  write(text: string): void {
    if (this.closed || this.truncated || text === '') return;
    if (this.appendWithin(text, this.maxBytes)) return;
    this.truncated = true;
    this.note(`\n[kiln: log truncated after ${formatBytes(this.maxBytes)}; the build goes on]\n`);
  }

  /** Kiln's own lines: past the budget too, within TAIL_BYTES. */
  note(text: string): void {
    if (this.closed || text === '') return;
    this.appendWithin(text, this.maxBytes + TAIL_BYTES);
  }

  /** Appends `text` if the log stays within `limit` bytes, else its whole lines that fit; whether all of it fit. */
  private appendWithin(text: string, limit: number): boolean {
    const size = Buffer.byteLength(text);
    if (this.bytes + size <= limit) {
      this.append(text, size);
      return true;
    }
    const head = wholeLinesWithin(text, limit - this.bytes);
    if (head) this.append(head, Buffer.byteLength(head));
    return false;
  }

  private append(text: string, size: number): void {
    this.bytes += size;
    this.file.write(text);
    if (this.detached) return;
    this.pending += text;
    if (this.pending.length >= MAX_ENTRY_CHARS) void this.flush();
    else if (!this.timer) {
      this.timer = setTimeout(() => void this.flush(), this.flushMs);
      this.timer.unref();
    }
  }

  /** Sends what is pending to the stream (in order with earlier flushes). */
  flush(): Promise<void> {
    clearTimeout(this.timer);
    this.timer = undefined;
    const text = this.pending;
    this.pending = '';
    if (text !== '') this.chain = this.chain.then(() => this.send(text));
    return this.chain;
  }

  private async send(text: string): Promise<void> {
    try {
      const pipeline = this.redis.pipeline();
      for (let i = 0; i < text.length; i += MAX_ENTRY_CHARS) {
        const d = text.slice(i, i + MAX_ENTRY_CHARS);
        pipeline.xadd(this.streamKey, 'MAXLEN', '~', LOG_STREAM_MAX_ENTRIES, '*', 'k', 'log', 'd', d);
      }
      // Expire even if the build never ends properly (a killed worker); the end renews it.
      pipeline.expire(this.streamKey, LOG_STREAM_TTL_SECONDS);
      const results = (await pipeline.exec()) ?? [];
      for (const [err] of results) if (err) throw err;
    } catch (err) {
      // The file is the permanent copy: a live-log hiccup must not fail the build.
      if (!this.redisFailed) {
        this.logger.warn({ buildId: this.buildId, err: (err as Error).message }, 'log stream: XADD failed');
      }
      this.redisFailed = true;
    }
  }

  /**
   * Starts the file with what earlier attempts of this build stored under `key`, so the
   * final log tells the whole story (attempt 1 failed on builder A, attempt 2 ...).
   */
  async continueFrom(storage: ObjectStorage, key: string): Promise<void> {
    if (!(await storage.head(key).catch(() => undefined))) return;
    const previous = await storage.get(key);
    for await (const chunk of previous.body) {
      // Counted, not cut: it was bounded when it was written; a full one leaves room for notes only.
      this.bytes += (chunk as Buffer).length;
      if (!this.file.write(chunk)) await once(this.file, 'drain');
    }
    if (this.bytes >= this.maxBytes) this.truncated = true;
  }

  /** Closes the file; further writes are dropped. */
  async close(): Promise<void> {
    if (this.closed) return;
    await this.flush();
    this.closed = true;
    this.file.end();
    await finished(this.file).catch(() => {});
  }

  /** Closes the file and stores it as `key`. */
  async store(storage: ObjectStorage, key: string): Promise<{ size: number }> {
    await this.close();
    if (this.fileError) throw this.fileError;
    const result = await storage.put(key, createReadStream(this.path), {
      contentType: 'text/plain; charset=utf-8',
    });
    return { size: result.size };
  }
}
