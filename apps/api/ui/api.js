// The JSON API with the bearer token the user signed in with (kept for this tab only).

const TOKEN_KEY = 'kiln.token';
const ROLE_KEY = 'kiln.role';

/**
 * The token and whose it is: a project's ('project') or the operator's ('operator'). The role only
 * picks the pages to show; the API decides what each token may read.
 */
export const token = {
  get: () => sessionStorage.getItem(TOKEN_KEY),
  role: () => sessionStorage.getItem(ROLE_KEY) ?? 'project',
  set: (value, role) => {
    sessionStorage.setItem(TOKEN_KEY, value);
    sessionStorage.setItem(ROLE_KEY, role);
  },
  clear: () => {
    sessionStorage.removeItem(TOKEN_KEY);
    sessionStorage.removeItem(ROLE_KEY);
  },
};

/** An `{error: {code, message}}` answer, or a network failure (`code: 'network'`). */
export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

async function send(path, init = {}, bearer = token.get()) {
  const headers = new Headers(init.headers);
  if (bearer) headers.set('authorization', `Bearer ${bearer}`);
  let res;
  try {
    res = await fetch(path, { ...init, headers });
  } catch (err) {
    if (err instanceof Error && err.name === 'AbortError') throw err;
    throw new ApiError(0, 'network', `the API does not answer (${err instanceof Error ? err.message : err})`);
  }
  if (res.ok) return res;
  let body;
  try {
    body = await res.json();
  } catch {
    body = undefined;
  }
  throw new ApiError(res.status, body?.error?.code ?? 'http', body?.error?.message ?? `HTTP ${res.status}`);
}

/** JSON of `path`; `bearer` overrides the stored token (to check one before keeping it). */
export async function api(path, init = {}, bearer = undefined) {
  const res = await send(path, init, bearer ?? token.get());
  return res.json();
}

/** The whole log of a finished build, as text. */
export async function logText(id, signal) {
  const res = await send(`/v1/builds/${encodeURIComponent(id)}/logs`, {
    headers: { accept: 'text/plain' },
    signal,
  });
  return res.text();
}

/**
 * Follows a build's log as server-sent events. EventSource cannot send an Authorization header
 * (and a token in the URL would end up in logs), so this reads the stream with fetch and parses
 * the events itself. Calls `onLog(text)` per chunk and `onEnd(status)` at the end; resolves when
 * the stream closes (true if it ended with an `end` event).
 */
export async function followLog(id, { onLog, onEnd, signal }) {
  const res = await send(`/v1/builds/${encodeURIComponent(id)}/logs`, {
    headers: { accept: 'text/event-stream' },
    signal,
  });
  if (!res.body) throw new ApiError(0, 'network', 'the log stream has no body');
  const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = '';
  let event = 'message';
  let data = [];
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return false;
    buffer += value;
    const lines = buffer.split('\n');
    // The last piece is a partial line until its "\n" arrives.
    buffer = lines.pop() ?? '';
    for (const raw of lines) {
      const line = raw.endsWith('\r') ? raw.slice(0, -1) : raw;
      if (line === '') {
        if (data.length > 0) {
          const text = data.join('\n');
          if (event === 'end') {
            onEnd(text);
            await reader.cancel();
            return true;
          }
          if (event === 'log') onLog(text);
        }
        event = 'message';
        data = [];
      } else if (!line.startsWith(':')) {
        const colon = line.indexOf(':');
        const field = colon < 0 ? line : line.slice(0, colon);
        let value = colon < 0 ? '' : line.slice(colon + 1);
        if (value.startsWith(' ')) value = value.slice(1);
        if (field === 'event') event = value;
        else if (field === 'data') data.push(value);
      }
    }
  }
}
