import type { Redis } from 'ioredis';

/** One entry of a build's log stream (`logStreamKey`): `log` text, or `end` with the final status. */
export interface LogEntry {
  id: string;
  kind: string;
  data: string;
}

export type StreamEntries = Array<[id: string, fields: string[]]>;

/** Entries read per XRANGE: a stream is never read whole. */
const PAGE = 200;

export function toEntry([id, fields]: [string, string[]]): LogEntry {
  const map: Record<string, string> = {};
  for (let i = 0; i + 1 < fields.length; i += 2) map[fields[i] as string] = fields[i + 1] as string;
  return { id, kind: map.k ?? 'log', data: map.d ?? '' };
}

/** The entries of `key` up to `end` (inclusive), page by page. */
export async function* streamEntries(redis: Redis, key: string, end = '+'): AsyncGenerator<LogEntry> {
  let start = '-';
  for (;;) {
    const page = (await redis.xrange(key, start, end, 'COUNT', PAGE)) as StreamEntries;
    for (const entry of page) yield toEntry(entry);
    const last = page.at(-1);
    if (!last || page.length < PAGE) return;
    start = `(${last[0]}`;
  }
}
