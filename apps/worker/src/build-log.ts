/**
 * A build's progress text: appended to the Redis log stream (`logStreamKey`, entries
 * `{k: 'log', d: text}` batched every ~100 ms; BuildLifecycle writes the `end` entry) for live followers,
 * and to a temp file that becomes the stored log object at the end. Nothing accumulates in memory
 * beyond one batch.
 */

import { once } from 'node:events';
import { createReadStream, createWriteStream, type WriteStream } from 'node:fs';
import { finished } from 'node:stream/promises';
import { LOG_STREAM_TTL_SECONDS, type Logger, logStreamKey, type ObjectStorage } from '@kiln/core';
import type { Redis } from 'ioredis';

/** Largest `d` of one stream entry; a bigger batch is split. */
const MAX_ENTRY_CHARS = 64 * 1024;

export class BuildLog {
  private pending = '';
  private timer: NodeJS.Timeout | undefined;
  private chain: Promise<void> = Promise.resolve();
  private readonly file: WriteStream;
  private fileError: Error | undefined;
  private redisFailed = false;
  private closed = false;

  constructor(
    private readonly redis: Redis,
    readonly buildId: string,
    readonly path: string,
    private readonly logger: Logger,
    private readonly flushMs = 100,
  ) {
    this.file = createWriteStream(path, { flags: 'a', mode: 0o600 });
    this.file.on('error', (err) => {
      this.fileError ??= err;
    });
  }

  get streamKey(): string {
    return logStreamKey(this.buildId);
  }

  write(text: string): void {
    if (this.closed || text === '') return;
    this.file.write(text);
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
        pipeline.xadd(this.streamKey, '*', 'k', 'log', 'd', text.slice(i, i + MAX_ENTRY_CHARS));
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
      if (!this.file.write(chunk)) await once(this.file, 'drain');
    }
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
