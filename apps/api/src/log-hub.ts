import { type BuildStatusName, FINAL_STATUSES, type Logger, logStreamKey } from '@kiln/core';
import type { Redis } from 'ioredis';
import { type LogEntry, type StreamEntries, toEntry } from './log-stream.js';

export type LogListener = (entry: LogEntry) => void;

export interface LogHubOptions {
  /** Commands connection (XREVRANGE, CLIENT UNBLOCK). */
  redis: Redis;
  /** A connection of its own: it spends its time in XREAD BLOCK. */
  reader: Redis;
  /** A build's status, asked when its stream has been quiet (the stream may have expired). */
  statusOf: (buildId: string) => Promise<BuildStatusName | null>;
  logger: Logger;
  blockMs?: number;
  /** A followed build quiet this long has its status checked. */
  quietMs?: number;
}

interface Followed {
  /** Last entry id handed to the listeners. */
  cursor: string;
  /** Resolves once `cursor` is the stream's last id at the time the build was first followed. */
  ready: Promise<void>;
  started: boolean;
  listeners: Set<LogListener>;
  quietSince: number;
  /** Seen final once with no end entry: the next quiet check ends the followers. */
  sawFinal: boolean;
}

/**
 * The live side of every followed build log in this API process: one XREAD BLOCK over all
 * followed streams on one connection, fanned out to the followers of each build. The follower
 * count therefore costs Redis nothing, and a quiet build's status is asked once per build, not
 * once per follower.
 */
export class LogHub {
  private readonly builds = new Map<string, Followed>();
  private readerId: number | undefined;
  private closed = false;
  private wake: (() => void) | undefined;
  private readonly blockMs: number;
  private readonly quietMs: number;

  constructor(private readonly opts: LogHubOptions) {
    this.blockMs = opts.blockMs ?? 5000;
    this.quietMs = opts.quietMs ?? 5000;
    opts.reader.on('ready', () => {
      opts.reader.client('ID').then(
        (id) => {
          this.readerId = Number(id);
        },
        () => undefined,
      );
    });
    opts.reader.on('error', (err: Error) => opts.logger.warn({ err: err.message }, 'log hub reader'));
    void this.loop();
  }

  /**
   * Follows a build: `listener` gets every entry after `until`; the entries up to it are the
   * caller's to read (XRANGE), so none is missed or doubled.
   */
  async subscribe(buildId: string, listener: LogListener): Promise<{ until: string; unsubscribe(): void }> {
    for (;;) {
      const followed = this.builds.get(buildId) ?? this.follow(buildId);
      await followed.ready;
      // The last follower may have left while this one waited: start over.
      if (this.builds.get(buildId) !== followed) continue;
      followed.listeners.add(listener);
      return {
        until: followed.cursor,
        unsubscribe: () => {
          followed.listeners.delete(listener);
          if (followed.listeners.size === 0 && this.builds.get(buildId) === followed)
            this.builds.delete(buildId);
        },
      };
    }
  }

  close(): void {
    this.closed = true;
    this.builds.clear();
    this.opts.reader.disconnect();
    this.wake?.();
  }

  private follow(buildId: string): Followed {
    const followed: Followed = {
      cursor: '0-0',
      ready: Promise.resolve(),
      started: false,
      listeners: new Set(),
      quietSince: Date.now(),
      sawFinal: false,
    };
    followed.ready = (async () => {
      const last = (await this.opts.redis
        .xrevrange(logStreamKey(buildId), '+', '-', 'COUNT', 1)
        .catch(() => [])) as StreamEntries;
      followed.cursor = last[0]?.[0] ?? '0-0';
      followed.started = true;
      this.interrupt();
    })();
    this.builds.set(buildId, followed);
    return followed;
  }

  /** Makes the blocked XREAD return now, so that it takes in a newly followed stream. */
  private interrupt(): void {
    this.wake?.();
    if (this.readerId !== undefined) {
      this.opts.redis.client('UNBLOCK', this.readerId).catch(() => undefined);
    }
  }

  private async loop(): Promise<void> {
    while (!this.closed) {
      const followed = [...this.builds].filter(([, b]) => b.started);
      if (followed.length === 0) {
        await new Promise<void>((resolve) => {
          this.wake = resolve;
        });
        this.wake = undefined;
        continue;
      }
      const keys = followed.map(([id]) => logStreamKey(id));
      const ids = followed.map(([, b]) => b.cursor);
      const result = (await this.opts.reader
        .xread('COUNT', 500, 'BLOCK', this.blockMs, 'STREAMS', ...keys, ...ids)
        .catch(async () => {
          // Redis away: followers stay, and catch up from their cursor once it is back.
          if (!this.closed) await new Promise((r) => setTimeout(r, 1000));
          return null;
        })) as Array<[string, StreamEntries]> | null;
      for (const [key, entries] of result ?? []) {
        const b = this.builds.get(key.slice(logStreamKey('').length));
        if (!b) continue;
        b.quietSince = Date.now();
        for (const raw of entries) {
          const entry = toEntry(raw);
          b.cursor = entry.id;
          for (const listener of [...b.listeners]) listener(entry);
        }
      }
      await this.checkQuiet();
    }
  }

  /**
   * A stream quiet for a while may belong to a build that ended long ago (its stream expired) or
   * whose end entry was lost: end its followers once it has been seen final twice.
   */
  private async checkQuiet(): Promise<void> {
    const now = Date.now();
    for (const [buildId, b] of this.builds) {
      if (!b.started || now - b.quietSince < this.quietMs) continue;
      b.quietSince = now;
      const status = await this.opts.statusOf(buildId).catch(() => undefined);
      if (status === undefined) continue;
      if (status !== null && !FINAL_STATUSES.has(status)) continue;
      if (status !== null && !b.sawFinal) {
        b.sawFinal = true;
        continue;
      }
      const end: LogEntry = { id: b.cursor, kind: 'end', data: status ?? 'unknown' };
      for (const listener of [...b.listeners]) listener(end);
    }
  }
}
