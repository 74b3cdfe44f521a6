import { type Build, FINAL_STATUSES, logStreamKey } from '@kiln/core';
import type { FastifyReply, FastifyRequest } from 'fastify';
import type { ApiDeps } from './deps.js';

type StreamEntries = Array<[id: string, fields: string[]]>;

function entryFields(fields: string[]): { kind: string; data: string } {
  const map: Record<string, string> = {};
  for (let i = 0; i + 1 < fields.length; i += 2) map[fields[i] as string] = fields[i + 1] as string;
  return { kind: map.k ?? 'log', data: map.d ?? '' };
}

/** What a build answered from the result cache has for a log: it never ran, the build it reused did. */
function cachedNote(build: Build): string {
  return `#0 kiln: result cache: reused the artifact of build ${build.cachedFromId} (same context, spec and platform); its log is at /v1/builds/${build.cachedFromId}/logs\n`;
}

/** The whole log as text: the stored object once the build is done, else what the live stream holds. */
export async function readLogs(deps: ApiDeps, build: Build, reply: FastifyReply) {
  reply.type('text/plain; charset=utf-8');
  if (build.cachedFromId) return reply.send(cachedNote(build));
  if (build.logKey) {
    const object = await deps.storage.get(build.logKey).catch(() => undefined);
    if (object) return reply.send(object.body);
  }
  const entries = (await deps.redis.xrange(logStreamKey(build.id), '-', '+')) as StreamEntries;
  return reply.send(
    entries
      .map(([, f]) => entryFields(f))
      .filter((e) => e.kind === 'log')
      .map((e) => e.data)
      .join(''),
  );
}

/** One server-sent event; every line of `data` its own `data:` field. */
function sse(event: string, data: string): string {
  return `event: ${event}\n${data
    .split('\n')
    .map((l) => `data: ${l}`)
    .join('\n')}\n\n`;
}

/**
 * Server-sent events: every log chunk as it arrives (`event: log`), then `event: end` with
 * the final status, and the response closes. A blocking XREAD on its own connection per
 * follower; the loop stops when the client goes away.
 */
export async function followLogs(deps: ApiDeps, build: Build, req: FastifyRequest, reply: FastifyReply) {
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
    res.write(sse('log', cachedNote(build)) + sse('end', build.status));
    res.end();
    return;
  }
  // Its own connection (a blocking XREAD holds it); queue commands until it is connected.
  const reader = deps.redis.duplicate({ enableOfflineQueue: true });
  let open = true;
  req.raw.on('close', () => {
    open = false;
    reader.disconnect();
  });
  const send = (event: string, data: string) => {
    res.write(sse(event, data));
  };
  try {
    let cursor = '0';
    for (let idle = 0; open; ) {
      const result = (await reader
        .xread('COUNT', 500, 'BLOCK', 5000, 'STREAMS', logStreamKey(build.id), cursor)
        .catch(() => null)) as Array<[string, StreamEntries]> | null;
      const entries = result?.[0]?.[1] ?? [];
      for (const [id, fields] of entries) {
        cursor = id;
        const e = entryFields(fields);
        if (e.kind === 'end') {
          send('end', e.data);
          return;
        }
        send('log', e.data);
      }
      if (entries.length > 0) continue;
      // No stream entries: the build may have ended long ago (stream expired) or not started.
      idle++;
      const current = await deps.builds.statusOf(build.id);
      if (!current || (FINAL_STATUSES.has(current) && idle > 1)) {
        send('end', current ?? 'unknown');
        return;
      }
      res.write(': keep-alive\n\n');
    }
  } finally {
    reader.disconnect();
    res.end();
  }
}
