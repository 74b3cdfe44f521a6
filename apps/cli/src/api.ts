/** The Kiln HTTP API as the CLI uses it: bearer auth, `{error: {code, message}}` turned into ApiError. */
import type { BuildList, BuildView } from '@kiln/contract';
import { ApiError, CliError, InterruptedError, messageOf } from './errors.js';

export type { BuildList, BuildView };

/** The error an unsuccessful response stands for, from its `{error}` body when there is one. */
export async function apiErrorFrom(res: Response): Promise<ApiError> {
  const text = await res.text().catch(() => '');
  try {
    const body = JSON.parse(text) as { error?: { code?: unknown; message?: unknown } };
    if (body.error && typeof body.error.message === 'string') {
      const code = typeof body.error.code === 'string' ? body.error.code : `http_${res.status}`;
      return new ApiError(body.error.message, code, res.status);
    }
  } catch {
    // not JSON: described below
  }
  const detail = text.trim().slice(0, 200);
  return new ApiError(
    `${res.status} ${res.statusText}${detail ? `: ${detail}` : ''}`,
    `http_${res.status}`,
    res.status,
  );
}

export class KilnApi {
  constructor(
    readonly baseUrl: string,
    private readonly token: string | undefined,
  ) {}

  url(p: string): string {
    return p.startsWith('http://') || p.startsWith('https://') ? p : `${this.baseUrl}${p}`;
  }

  /** fetch with the token; network failures become a CliError naming the server. */
  async fetch(p: string, init: RequestInit = {}): Promise<Response> {
    const headers = new Headers(init.headers);
    if (this.token) headers.set('authorization', `Bearer ${this.token}`);
    try {
      return await fetch(this.url(p), { ...init, headers });
    } catch (err) {
      if (init.signal?.aborted) throw abortReason(init.signal);
      throw new CliError(`cannot reach Kiln at ${this.baseUrl}: ${messageOf(err)}`, 1, 'unreachable');
    }
  }

  async json<T>(p: string, init: RequestInit = {}): Promise<T> {
    const headers = new Headers(init.headers);
    headers.set('accept', 'application/json');
    const res = await this.fetch(p, { ...init, headers });
    if (!res.ok) throw await apiErrorFrom(res);
    return (await res.json()) as T;
  }

  getBuild(id: string, signal?: AbortSignal): Promise<BuildView> {
    return this.json<BuildView>(`/v1/builds/${encodeURIComponent(id)}`, signal ? { signal } : {});
  }

  listBuilds(q: { status?: string; cursor?: string; limit?: number }): Promise<BuildList> {
    const params = new URLSearchParams();
    if (q.status) params.set('status', q.status);
    if (q.cursor) params.set('cursor', q.cursor);
    if (q.limit !== undefined) params.set('limit', String(q.limit));
    const query = params.toString();
    return this.json<BuildList>(`/v1/builds${query ? `?${query}` : ''}`);
  }

  cancelBuild(id: string, signal?: AbortSignal): Promise<BuildView> {
    return this.json<BuildView>(`/v1/builds/${encodeURIComponent(id)}/cancel`, {
      method: 'POST',
      ...(signal ? { signal } : {}),
    });
  }
}

/** What an aborted signal was aborted with, as an error to throw. */
export function abortReason(signal: AbortSignal): Error {
  const reason = signal.reason as unknown;
  return reason instanceof Error ? reason : new InterruptedError();
}
