/** The Kiln HTTP API as the CLI uses it: bearer auth, `{error: {code, message}}` turned into ApiError. */
import type { BuildList, BuildView, TokenScope } from '@kiln/contract';
import { checkToken, configPath, loadConfig } from './config.js';
import {
  ApiError,
  CliError,
  ENV_TOKEN_HINT,
  EXIT_UNAVAILABLE,
  InterruptedError,
  LOGIN_HINT,
  messageOf,
  UsageError,
} from './errors.js';
import { AnswerTooLargeError, type HttpResponse, type RequestOptions, request } from './http.js';

export type { BuildList, BuildView };

export interface TokenView {
  id: string;
  name: string;
  scope: TokenScope;
  createdAt: string;
  revokedAt: string | null;
}

/** A token just made: the only answer that carries its secret. */
export interface NewToken {
  id: string;
  name: string;
  scope: TokenScope;
  token: string;
}

export interface ProjectQuotas {
  queuedBuilds: number;
  runningBuilds: number;
  artifactBytes: number;
  logBytes: number;
  storedBytes: number;
}

/** A change of a project's own quotas: null goes back to the configured default. */
export type QuotaChange = Partial<Record<keyof ProjectQuotas, number | null>>;

export interface ProjectView {
  id: string;
  name: string;
  createdAt: string;
  disabledAt: string | null;
  /** The project's own values; null takes the configured default. */
  quotas: Record<keyof ProjectQuotas, number | null>;
  effectiveQuotas: ProjectQuotas;
  /** What the project keeps stored now. */
  usage: { storedBytes: number };
}

/**
 * The fields this CLI reads of an answer without checking for them (and, for a list, of each
 * item). One missing means that what answered is not the Kiln this CLI speaks to: it is
 * refused with an error naming the field, not met later as a TypeError.
 */
export interface Shape {
  fields: readonly string[];
  items?: Shape;
}

export const BUILD: Shape = { fields: ['id', 'status', 'spec', 'createdAt', 'links'] };
const TOKEN: Shape = { fields: ['id', 'name', 'scope', 'createdAt'] };
const NEW_TOKEN: Shape = { fields: ['id', 'name', 'scope', 'token'] };
const PROJECT: Shape = { fields: ['id', 'name', 'createdAt', 'quotas', 'effectiveQuotas', 'usage'] };
const listOf = (items: Shape): Shape => ({ fields: ['items'], items });

/** The first field `shape` wants that `value` lacks, as a path (`items[3].status`). */
export function missingField(value: unknown, shape: Shape, at = ''): string | undefined {
  const object = value !== null && typeof value === 'object' ? (value as Record<string, unknown>) : undefined;
  for (const field of shape.fields) {
    if (object?.[field] === undefined) return `${at}${field}`;
  }
  if (shape.items) {
    const items = object?.items;
    if (!Array.isArray(items)) return `${at}items`;
    for (const [i, item] of items.entries()) {
      const missing = missingField(item, shape.items, `${at}items[${i}].`);
      if (missing) return missing;
    }
  }
  return undefined;
}

/** Extra advice for an error answer, printed after it. */
export type HintFor = (err: ApiError) => string | undefined;

/** The error an unsuccessful response stands for, from its `{error}` body when there is one. */
export async function apiErrorFrom(res: HttpResponse): Promise<ApiError> {
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
  const location = res.header('location');
  if (res.status >= 300 && res.status < 400 && location) {
    // Not followed: a redirect could take the token elsewhere.
    return new ApiError(
      `${res.status} ${res.statusText}: redirected to ${location}`,
      `http_${res.status}`,
      res.status,
    );
  }
  const detail = text.trim().slice(0, 200);
  return new ApiError(
    `${res.status} ${res.statusText}${detail ? `: ${detail}` : ''}`,
    `http_${res.status}`,
    res.status,
  );
}

/**
 * One path segment from what the user typed. `.` and `..` survive encoding and the URL parser
 * then collapses them (`tokens revoke ..` would send `DELETE /v1/`), so they are refused.
 */
export function segment(value: string, what: string): string {
  if (value === '' || value === '.' || value === '..') throw new UsageError(`"${value}" is not a ${what}`);
  return encodeURIComponent(value);
}

/**
 * How long a small JSON exchange may stay silent before it fails (and, where that may pass, is
 * retried): a hung API or a blackholed address otherwise holds each attempt for the transport's
 * 300 s, and a wait made of dozens of attempts for hours.
 */
export const JSON_IDLE_TIMEOUT_MS = 60_000;

export class KilnApi {
  constructor(
    readonly baseUrl: string,
    private readonly token: string | undefined,
    private readonly hintFor?: HintFor,
  ) {}

  url(p: string): string {
    return p.startsWith('http://') || p.startsWith('https://') ? p : `${this.baseUrl}${p}`;
  }

  /** A request with the token; network failures become a CliError naming the server. */
  async request(p: string, init: RequestOptions = {}): Promise<HttpResponse> {
    const headers = { ...init.headers };
    if (this.token) headers.authorization = `Bearer ${this.token}`;
    try {
      return await request(this.url(p), { ...init, headers });
    } catch (err) {
      if (init.signal?.aborted) throw abortReason(init.signal);
      throw new CliError(
        `cannot reach Kiln at ${this.baseUrl}: ${messageOf(err)}`,
        EXIT_UNAVAILABLE,
        'unreachable',
      );
    }
  }

  /** A request whose unsuccessful answer is thrown as its ApiError. */
  async call(p: string, init: RequestOptions = {}): Promise<HttpResponse> {
    const res = await this.request(p, init);
    if (res.ok) return res;
    throw await this.errorFrom(res);
  }

  /** The error an unsuccessful answer of this server stands for, with this client's hint. */
  async errorFrom(res: HttpResponse): Promise<ApiError> {
    const err = await apiErrorFrom(res);
    const redirected = res.status >= 300 && res.status < 400;
    const hint =
      this.hintFor?.(err) ??
      (redirected
        ? `hint: the CLI does not follow redirects: set the Kiln URL to the API's own address`
        : undefined);
    return hint ? new ApiError(err.message, err.code ?? `http_${res.status}`, err.status, hint) : err;
  }

  async json<T>(p: string, shape: Shape, init: RequestOptions = {}): Promise<T> {
    const headers: Record<string, string> = { ...init.headers, accept: 'application/json' };
    if (init.body !== undefined) headers['content-type'] = 'application/json';
    const options = { idleTimeoutMs: JSON_IDLE_TIMEOUT_MS, ...init, headers };
    return this.readJson<T>(await this.call(p, options), shape);
  }

  /**
   * The JSON of a successful answer, of `shape`. One that breaks off, is not JSON (a proxy's
   * page, a KILN_URL naming the dashboard) or lacks a field is an error naming the server, not
   * a parser's message or a TypeError.
   */
  async readJson<T>(res: HttpResponse, shape: Shape): Promise<T> {
    let text: string;
    try {
      text = await res.text();
    } catch (err) {
      if (err instanceof AnswerTooLargeError) {
        throw new CliError(
          `Kiln at ${this.baseUrl} answered ${res.status} with more than ${err.maxBytes} bytes: is it the API's address?`,
          EXIT_UNAVAILABLE,
          'bad_answer',
        );
      }
      throw new CliError(
        `the answer of Kiln at ${this.baseUrl} broke off: ${messageOf(err)}`,
        EXIT_UNAVAILABLE,
        'unreachable',
      );
    }
    let value: unknown;
    try {
      value = JSON.parse(text);
    } catch {
      const type = res.header('content-type') ?? 'no content type';
      throw new CliError(
        `Kiln at ${this.baseUrl} answered ${res.status} with ${text === '' ? 'an empty body' : type}, not the API's JSON: is it the API's address?`,
        EXIT_UNAVAILABLE,
        'bad_answer',
      );
    }
    const missing = missingField(value, shape);
    if (missing !== undefined) {
      throw new CliError(
        `Kiln at ${this.baseUrl} answered ${res.status} without "${missing}": is it the API's address, and a Kiln of this CLI's version?`,
        EXIT_UNAVAILABLE,
        'bad_answer',
      );
    }
    return value as T;
  }

  getBuild(id: string, signal?: AbortSignal): Promise<BuildView> {
    return this.json<BuildView>(`/v1/builds/${segment(id, 'build ID')}`, BUILD, signal ? { signal } : {});
  }

  listBuilds(q: { status?: string; cursor?: string; limit?: number }): Promise<BuildList> {
    const params = new URLSearchParams();
    if (q.status) params.set('status', q.status);
    if (q.cursor) params.set('cursor', q.cursor);
    if (q.limit !== undefined) params.set('limit', String(q.limit));
    const query = params.toString();
    return this.json<BuildList>(`/v1/builds${query ? `?${query}` : ''}`, listOf(BUILD));
  }

  cancelBuild(id: string, signal?: AbortSignal): Promise<BuildView> {
    return this.json<BuildView>(`/v1/builds/${segment(id, 'build ID')}/cancel`, BUILD, {
      method: 'POST',
      ...(signal ? { signal } : {}),
    });
  }

  async listTokens(): Promise<TokenView[]> {
    return (await this.json<{ items: TokenView[] }>('/v1/tokens', listOf(TOKEN))).items;
  }

  createToken(body: { name: string; scope?: TokenScope }): Promise<NewToken> {
    return this.json<NewToken>('/v1/tokens', NEW_TOKEN, { method: 'POST', body: JSON.stringify(body) });
  }

  async revokeToken(id: string): Promise<void> {
    await this.call(`/v1/tokens/${segment(id, 'token ID')}`, { method: 'DELETE' });
  }

  // The operator's routes: a client made with KILN_OPERATOR_TOKEN (operatorClient).

  async listProjects(): Promise<ProjectView[]> {
    return (await this.json<{ items: ProjectView[] }>('/v1/admin/projects', listOf(PROJECT))).items;
  }

  createProject(body: { name: string; quotas?: QuotaChange }): Promise<ProjectView> {
    return this.json<ProjectView>('/v1/admin/projects', PROJECT, {
      method: 'POST',
      body: JSON.stringify(body),
    });
  }

  getProject(ref: string): Promise<ProjectView> {
    return this.json<ProjectView>(`/v1/admin/projects/${segment(ref, 'project')}`, PROJECT);
  }

  updateProject(ref: string, body: { disabled?: boolean; quotas?: QuotaChange }): Promise<ProjectView> {
    return this.json<ProjectView>(`/v1/admin/projects/${segment(ref, 'project')}`, PROJECT, {
      method: 'PATCH',
      body: JSON.stringify(body),
    });
  }

  createProjectToken(ref: string, body: { name: string; scope?: TokenScope }): Promise<NewToken> {
    return this.json<NewToken>(`/v1/admin/projects/${segment(ref, 'project')}/tokens`, NEW_TOKEN, {
      method: 'POST',
      body: JSON.stringify(body),
    });
  }
}

/** The client of the project whose token kiln login saved (KILN_URL and KILN_TOKEN override it). */
export async function projectClient(env: Readonly<Record<string, string | undefined>>): Promise<KilnApi> {
  const config = await loadConfig(env);
  const fromEnv = config.source.token === 'env';
  // KILN_TOKEN wins over kiln login: a refused one is fixed there, not by logging in again.
  const hint = fromEnv ? ENV_TOKEN_HINT : LOGIN_HINT;
  const token =
    config.token === undefined
      ? undefined
      : checkToken(config.token, fromEnv ? 'KILN_TOKEN' : `the token in ${configPath(env)}`, hint);
  return new KilnApi(config.url, token, (err) => (err.code === 'unauthorized' ? hint : undefined));
}

/** What an aborted signal was aborted with, as an error to throw. */
export function abortReason(signal: AbortSignal): Error {
  const reason = signal.reason as unknown;
  return reason instanceof Error ? reason : new InterruptedError();
}
