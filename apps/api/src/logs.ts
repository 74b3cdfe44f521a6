import { Readable } from 'node:stream';
import { type Build, FINAL_STATUSES, getIfStored, logStreamKey } from '@kiln/core';
import type { FastifyReply, FastifyRequest } from 'fastify';
import type { ApiDeps } from './deps.js';
import { entryIdAfter, type LogEntry, parseEntryId, streamEntries } from './log-stream.js';
import { SseWriter, sseEvent } from './sse.js';

/** What one follower may leave unread, and for how long its socket may stay full, before it is dropped. */
const MAX_UNREAD_BYTES = 1024 * 1024;
const MAX_STALL_MS = 30_000;
/** A comment this often keeps proxies from closing a quiet stream. */
const KEEP_ALIVE_MS = 15_000;

/** What a build answered from the result cache has for a log: it never ran, the build it reused did. */
function cachedNote(build: Build): string {
  return `#0 kiln: result cache: reused the artifact of build ${build.cachedFromId} (same context, spec and platform); its log is at /v1/builds/${build.cachedFromId}/logs\n`;
}

async function* logText(deps: ApiDeps, build: Build): AsyncGenerator<string> {
  for await (const e of streamEntries(deps.redis, logStreamKey(build.id))) if (e.kind === 'log') yield e.data;
}

/** The whole log as text, streamed: the stored object once the build is done, else the live stream page by page. */
export async function readLogs(deps: ApiDeps, build: Build, reply: FastifyReply) {
  reply.type('text/plain; charset=utf-8');
  if (build.cachedFromId) return reply.send(cachedNote(build));
  const object = build.logKey ? await getIfStored(deps.storage, build.logKey) : undefined;
  if (object) return reply.send(object.body);
  return reply.send(Readable.from(logText(deps, build)));
}

/**
 * A finished build's stored log, whole, as `log` events (without ids: nothing follows it); false
 * when there is none to send. The live stream is capped in entries and expires a day after the
 * build, so replayed from there an old or long log would come back cut, or empty.
 */
async function sendStoredLog(
  deps: ApiDeps,
  build: Build,
  out: SseWriter,
  closed: () => boolean,
): Promise<boolean> {
  if (!FINAL_STATUSES.has(build.status) || !build.logKey) return false;
  const object = await getIfStored(deps.storage, build.logKey);
  if (!object) return false;
  try {
    // Text decoded across chunks: a character split between two reads is not mangled.
    object.body.setEncoding('utf8');
    for await (const text of object.body as AsyncIterable<string>) {
      if (closed()) break;
      await out.sendPaced('log', text);
    }
  } finally {
    object.body.destroy();
  }
  return true;
}

/**
 * Server-sent events: the log so far, then every chunk as it arrives (`event: log`), then
 * `event: end` with the final status, and the response closes. The live part comes from the
 * process's LogHub (one Redis reader for all followers). A stream also ends with
 * `event: reconnect` (too old: KILN_MAX_LOG_STREAM_SECONDS, or the API is stopping; a client
 * reconnects and is replayed the log, or only what follows the `id` it sends back as
 * Last-Event-ID) or `event: revoked` (its token was revoked).
 */
export async function followLogs(deps: ApiDeps, build: Build, req: FastifyRequest, reply: FastifyReply) {
  let stop: (event: string, data: string) => void = () => undefined;
  const release = await deps.followers.admit(req.projectId, () =>
    stop('reconnect', 'the server is shutting down; reconnect'),
  );
  reply.hijack();
  const res = reply.raw;
  res.writeHead(200, {
    'content-type': 'text/event-stream; charset=utf-8',
    'cache-control': 'no-cache',
    connection: 'keep-alive',
    'x-accel-buffering': 'no',
  });
  if (build.cachedFromId) {
    // Done before it started: nothing to follow.
    res.end(sseEvent('log', cachedNote(build)) + sseEvent('end', build.status));
    release();
    return;
  }

  const out = new SseWriter(res, {
    maxBufferedBytes: MAX_UNREAD_BYTES,
    maxStallMs: MAX_STALL_MS,
    onTooSlow: () => {
      deps.logger.info({ buildId: build.id }, 'log follower too slow: disconnected');
      res.destroy();
    },
  });
  let finished = false;
  let unsubscribe = () => {};
  const cleanups: Array<() => void> = [];
  const done = new Promise<void>((resolve) => {
    const finish = (end?: { event: string; data: string }) => {
      if (finished) return;
      finished = true;
      if (end) out.send(end.event, end.data);
      res.end();
      unsubscribe();
      for (const c of cleanups) c();
      release();
      resolve();
    };
    stop = (event, data) => finish({ event, data });
    res.on('close', () => finish());
  });
  const maxAge = deps.config.logs.maxStreamSeconds;
  const age = setTimeout(
    () => stop('reconnect', `this stream reached its maximum age of ${maxAge} s; reconnect`),
    maxAge * 1000,
  );
  const keepAlive = setInterval(() => out.comment('keep-alive'), KEEP_ALIVE_MS);
  cleanups.push(
    () => clearTimeout(age),
    () => clearInterval(keepAlive),
    deps.tokens.onRevoked((tokenId) => {
      if (tokenId === req.tokenId) stop('revoked', 'the token of this stream was revoked');
    }),
  );

  const after = parseEntryId(req.headers['last-event-id'] as string | undefined);
  if (after === undefined) {
    const sent = await sendStoredLog(deps, build, out, () => finished).catch((err: unknown) => {
      deps.logger.warn({ buildId: build.id, err: (err as Error).message }, 'reading the stored log failed');
      stop('reconnect', 'the log is unavailable for a moment; reconnect');
      return true;
    });
    if (sent) {
      stop('end', build.status);
      return done;
    }
  }

  // Entries the hub hands over while the history is still being sent wait here, in order.
  let pending: LogEntry[] | undefined = [];
  const deliver = (e: LogEntry) => {
    if (e.kind === 'end') stop('end', e.data);
    else if (after === undefined || entryIdAfter(e.id, after)) out.send('log', e.data, e.id);
  };
  const sub = await deps.logHub.subscribe(build.id, (e) => (pending ? pending.push(e) : deliver(e)));
  unsubscribe = sub.unsubscribe;
  if (finished) unsubscribe();
  try {
    for await (const e of streamEntries(deps.redis, logStreamKey(build.id), sub.until, after)) {
      if (finished) break;
      if (e.kind === 'end') stop('end', e.data);
      else await out.sendPaced('log', e.data, e.id);
    }
  } catch (err) {
    deps.logger.warn({ buildId: build.id, err: (err as Error).message }, 'reading the log stream failed');
    stop('reconnect', 'the log is unavailable for a moment; reconnect');
  }
  const waiting = pending;
  pending = undefined;
  for (const e of waiting) if (!finished) deliver(e);
  await done;
}
