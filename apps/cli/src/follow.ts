/**
 * Following a build's log through the API's server-sent events (`event: log` chunks, then
 * `event: end` with the final status). A dropped connection is reopened with `Last-Event-ID`, so
 * the server sends only what came after; a server whose events carry no ids replays the stream
 * from its start, and the events already shown are skipped by count.
 */
import { FINAL_STATUSES } from '@kiln/contract';
import { abortReason, type BuildView, JSON_IDLE_TIMEOUT_MS, type KilnApi, segment } from './api.js';
import { CliError, EXIT_UNAVAILABLE } from './errors.js';
import type { HttpResponse } from './http.js';

export interface SseEvent {
  event: string;
  data: string;
  /** The event's `id:` field, when it has one. */
  id?: string;
}

/**
 * Characters one event may hold, its lines together: far above a log chunk (a whole build log is
 * 4 MiB by default), so only a stream that never ends its event or line gets there.
 */
export const MAX_SSE_EVENT_CHARS = 32 * 1024 * 1024;

/** A stream whose event passes MAX_SSE_EVENT_CHARS: not worth reopening, it is broken. */
export class EventTooLargeError extends Error {
  constructor() {
    super(`an event of the log stream is larger than ${MAX_SSE_EVENT_CHARS} characters`);
    this.name = 'EventTooLargeError';
  }
}

/** Parses an event stream (WHATWG rules: `event:`/`data:` fields, `:` comments, blank line dispatches). */
export async function* parseSse(body: AsyncIterable<Uint8Array>): AsyncGenerator<SseEvent> {
  const decoder = new TextDecoder();
  let buffer = '';
  let event = '';
  let data: string[] = [];
  let dataChars = 0;
  let id: string | undefined;
  let hasData = false;
  const line = function* (text: string): Generator<SseEvent> {
    if (text === '') {
      if (hasData)
        yield { event: event || 'message', data: data.join('\n'), ...(id === undefined ? {} : { id }) };
      event = '';
      data = [];
      dataChars = 0;
      id = undefined;
      hasData = false;
      return;
    }
    if (text.startsWith(':')) return;
    const colon = text.indexOf(':');
    const field = colon === -1 ? text : text.slice(0, colon);
    let value = colon === -1 ? '' : text.slice(colon + 1);
    if (value.startsWith(' ')) value = value.slice(1);
    if (field === 'event') event = value;
    // WHATWG: an id holding NUL is ignored.
    else if (field === 'id' && !value.includes('\0')) id = value;
    else if (field === 'data') {
      data.push(value);
      dataChars += value.length;
      hasData = true;
    }
  };
  const tooLarge = () => new EventTooLargeError();
  for await (const chunk of body) {
    // The search starts in the new text: a long line is not searched again from its start.
    let nl = buffer.length;
    buffer += decoder.decode(chunk, { stream: true });
    nl = buffer.indexOf('\n', nl);
    while (nl !== -1) {
      const text = buffer.slice(0, nl).replace(/\r$/, '');
      buffer = buffer.slice(nl + 1);
      yield* line(text);
      if (dataChars > MAX_SSE_EVENT_CHARS) throw tooLarge();
      nl = buffer.indexOf('\n');
    }
    if (buffer.length + dataChars > MAX_SSE_EVENT_CHARS) throw tooLarge();
  }
  buffer += decoder.decode();
  if (buffer !== '') yield* line(buffer.replace(/\r$/, ''));
  yield* line('');
}

export interface FollowOptions {
  signal?: AbortSignal;
  onLog: (text: string) => void;
  /** Reconnections in a row without news before giving up. */
  maxRetries?: number;
  retryDelayMs?: number;
}

const sleep = (ms: number, signal?: AbortSignal) =>
  new Promise<void>((resolve, reject) => {
    if (signal?.aborted) return reject(abortReason(signal));
    const timer = setTimeout(() => {
      signal?.removeEventListener('abort', onAbort);
      resolve();
    }, ms);
    const onAbort = () => {
      clearTimeout(timer);
      reject(abortReason(signal as AbortSignal));
    };
    signal?.addEventListener('abort', onAbort, { once: true });
  });

/** Shows the log as it comes; resolves with the status the `end` event carries. */
export async function followLogs(api: KilnApi, id: string, opts: FollowOptions): Promise<string> {
  const { signal } = opts;
  const maxRetries = opts.maxRetries ?? 8;
  let shown = 0;
  // The id of the last event shown. Counting alone is wrong once the server's stream was trimmed
  // (its replay then starts later than the first connection's did, and lines would be skipped).
  let lastId: string | undefined;
  let failures = 0;
  let lastError = '';
  for (;;) {
    let res: HttpResponse | undefined;
    const resumed = lastId !== undefined;
    try {
      res = await api.request(`/v1/builds/${segment(id, 'build ID')}/logs`, {
        // The API sends a keep-alive every 15 s: a minute without one is a dead connection.
        idleTimeoutMs: JSON_IDLE_TIMEOUT_MS,
        headers: {
          accept: 'text/event-stream',
          ...(lastId === undefined ? {} : { 'last-event-id': lastId }),
        },
        ...(signal ? { signal } : {}),
      });
    } catch (err) {
      if (signal?.aborted) throw abortReason(signal);
      lastError = (err as Error).message;
    }
    if (res && !res.ok) {
      // What may pass (a restarting API behind a proxy's 5xx, the follower limit's 429) is
      // retried; anything else is the answer.
      const err = await api.errorFrom(res);
      if (err.exitCode !== EXIT_UNAVAILABLE) throw err;
      lastError = err.message;
    } else if (res) {
      let index = 0;
      try {
        for await (const ev of parseSse(res.body)) {
          if (ev.event === 'end') return ev.data;
          if (ev.event !== 'log') continue;
          if (!resumed && index++ < shown) continue;
          shown++;
          if (ev.id !== undefined) lastId = ev.id;
          failures = 0;
          opts.onLog(ev.data);
        }
        lastError = 'the log stream ended early';
      } catch (err) {
        if (signal?.aborted) throw abortReason(signal);
        lastError = (err as Error).message;
        // Lost at once: the build is then polled until it ends (followUntilFinal).
        if (err instanceof EventTooLargeError) failures = maxRetries;
      }
    }
    if (++failures > maxRetries) {
      throw new CliError(
        `lost the log stream of build ${id}: ${lastError}`,
        EXIT_UNAVAILABLE,
        'log_stream_lost',
      );
    }
    await sleep(Math.min((opts.retryDelayMs ?? 500) * 2 ** (failures - 1), 5000), signal);
  }
}

/**
 * Polls the build until it is final (the row may lag the end of its log for a moment). With
 * `unavailableMs`, polls that fail in a way that may pass (exit 3: unreachable, 5xx) are
 * repeated, backing off to 10 s, for that long in a row (by the clock: an attempt against a
 * hung API can itself take a minute) before one ends the wait.
 */
export async function waitForFinal(
  api: KilnApi,
  id: string,
  finals: ReadonlySet<string>,
  opts: { signal?: AbortSignal; timeoutMs?: number; intervalMs?: number; unavailableMs?: number } = {},
) {
  const end = Date.now() + (opts.timeoutMs ?? 24 * 3600_000);
  const interval = opts.intervalMs ?? 500;
  let unavailable = 0;
  let unavailableSince: number | undefined;
  for (;;) {
    let build: BuildView | undefined;
    try {
      build = await api.getBuild(id, opts.signal);
      unavailable = 0;
      unavailableSince = undefined;
    } catch (err) {
      const passing = err instanceof CliError && err.exitCode === EXIT_UNAVAILABLE;
      unavailableSince ??= Date.now();
      const outage = Date.now() - unavailableSince;
      if (opts.signal?.aborted || !passing || outage >= (opts.unavailableMs ?? 0)) throw err;
      unavailable++;
    }
    if (build && finals.has(build.status)) return build;
    if (build && Date.now() > end) throw new CliError(`build ${id} is still ${build.status}`, 1, 'timeout');
    await sleep(Math.min(interval * 2 ** unavailable, 10_000), opts.signal);
  }
}

/**
 * Shows the log, then returns the build once final. After the log's end the row may lag it for a
 * moment, hence a bound; when the log stream is lost (a proxy that cuts event streams, an API
 * restarting) the build is still running and is waited for as long as it runs, as `onLost` says,
 * through failed polls while the outage lasts.
 */
export async function followUntilFinal(
  api: KilnApi,
  id: string,
  opts: FollowOptions & { onLost: (err: CliError) => void; pollMs?: number; unavailableMs?: number },
) {
  const { signal } = opts;
  // An outage may go on for a while: 10 minutes of failed polls.
  const unavailableMs = opts.unavailableMs ?? 10 * 60_000;
  try {
    await followLogs(api, id, opts);
  } catch (err) {
    if (signal?.aborted || !(err instanceof CliError) || err.code !== 'log_stream_lost') throw err;
    opts.onLost(err);
    return waitForFinal(api, id, FINAL_STATUSES, {
      ...(signal ? { signal } : {}),
      intervalMs: opts.pollMs ?? 2000,
      unavailableMs,
    });
  }
  // An API restarting just as the log ends (a proxy's one 502) must not fail a finished build.
  return waitForFinal(api, id, FINAL_STATUSES, {
    ...(signal ? { signal } : {}),
    timeoutMs: 60_000,
    ...(opts.pollMs !== undefined ? { intervalMs: opts.pollMs } : {}),
    unavailableMs,
  });
}
