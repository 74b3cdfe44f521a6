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

/** The entries of `key` after `after` (exclusive; from the first without it) up to `end` (inclusive), page by page. */
export async function* streamEntries(
  redis: Redis,
  key: string,
  end = '+',
  after?: string,
): AsyncGenerator<LogEntry> {
  let start = after === undefined ? '-' : `(${after}`;
  for (;;) {
    const page = (await redis.xrange(key, start, end, 'COUNT', PAGE)) as StreamEntries;
    for (const entry of page) yield toEntry(entry);
    const last = page.at(-1);
    if (!last || page.length < PAGE) return;
    start = `(${last[0]}`;
  }
}

const MAX_ID_PART = 2n ** 64n - 1n;

/**
 * A Redis stream entry id (`<ms>-<seq>`, each part a 64-bit unsigned number), as a client may
 * send it back in Last-Event-ID; anything else is no id (the stream starts from its beginning).
 * Past 64 bits Redis refuses the id, and the stream would retry that read for ever.
 */
export function parseEntryId(text: string | undefined): string | undefined {
  if (text === undefined || !/^\d{1,20}-\d{1,20}$/.test(text)) return undefined;
  return text.split('-').every((part) => BigInt(part) <= MAX_ID_PART) ? text : undefined;
}

/** True when entry id `a` comes after `b` in the stream. */
export function entryIdAfter(a: string, b: string): boolean {
  const [am, as] = a.split('-').map(BigInt) as [bigint, bigint];
  const [bm, bs] = b.split('-').map(BigInt) as [bigint, bigint];
  return am > bm || (am === bm && as > bs);
}
