/**
 * `POST /v1/builds`: the context tar, gzip-compressed on the way, streamed as the request body
 * (never held whole), with the spec in the query string. Secrets and build args never go in the
 * URL (URLs get logged, and a build arg is where many pass a token), and a spec too long for one
 * (servers take 16 KiB of headers) does not fit there: then the body is multipart, a JSON `spec`
 * part, then the context.
 */
import { randomUUID } from 'node:crypto';
import { pipeline, type Readable, Transform } from 'node:stream';
import { createGzip } from 'node:zlib';
import { abortReason, BUILD, type BuildView, JSON_IDLE_TIMEOUT_MS, type KilnApi } from './api.js';
import { CliError, messageOf } from './errors.js';
import type { HttpResponse } from './http.js';

export interface BuildRequest {
  output: { type: string; dest: string; attrs: Record<string, string> };
  file: string;
  target?: string | undefined;
  platform?: string | undefined;
  network?: string | undefined;
  noCache?: boolean;
  provenance?: string | undefined;
  buildArgs: Record<string, string>;
  labels: Record<string, string>;
}

/** The same spec as JSON fields, for a build of a stored context (POST /v1/builds {"context"}). */
export function buildFields(req: BuildRequest): Record<string, unknown> {
  return {
    output: { type: req.output.type, dest: req.output.dest, ...req.output.attrs },
    file: req.file,
    ...(req.target ? { target: req.target } : {}),
    ...(req.platform ? { platform: req.platform } : {}),
    ...(req.network ? { network: req.network } : {}),
    ...(req.noCache ? { noCache: true } : {}),
    ...(req.provenance !== undefined ? { provenance: req.provenance } : {}),
    buildArgs: req.buildArgs,
    labels: req.labels,
  };
}

/** How long a JSON POST may still answer after Ctrl-C. */
export const ANSWER_GRACE_MS = 10_000;

/**
 * POST /v1/builds with a JSON body: a stored context (`context`) or a git one (`git`), the spec
 * beside it. Ctrl-C leaves the request ANSWER_GRACE_MS to answer: the server may have created
 * the build already, and the caller cancels a build it knows of instead of leaving it running.
 */
async function postJsonBuild(
  api: KilnApi,
  source: { context: string } | { git: string },
  fields: Record<string, unknown>,
  secrets: Record<string, Buffer> | undefined,
  signal: AbortSignal | undefined,
): Promise<HttpResponse> {
  if (signal?.aborted) throw abortReason(signal);
  const late = new AbortController();
  let timer: NodeJS.Timeout | undefined;
  const onAbort = () => {
    timer = setTimeout(() => late.abort(signal?.reason), ANSWER_GRACE_MS);
  };
  signal?.addEventListener('abort', onAbort, { once: true });
  try {
    return await api.request('/v1/builds', {
      method: 'POST',
      idleTimeoutMs: JSON_IDLE_TIMEOUT_MS,
      signal: late.signal,
      headers: { 'content-type': 'application/json', 'idempotency-key': randomUUID() },
      body: JSON.stringify({
        ...source,
        ...fields,
        ...(secrets && Object.keys(secrets).length > 0 ? { secrets: secretsField(secrets) } : {}),
      }),
    });
  } finally {
    signal?.removeEventListener('abort', onAbort);
    clearTimeout(timer);
  }
}

/**
 * Builds a context the server already stores for this project, by its digest: the build, or
 * undefined when the server does not hold it (404: the caller uploads).
 */
export async function submitStoredBuild(
  api: KilnApi,
  digest: string,
  fields: Record<string, unknown>,
  secrets: Record<string, Buffer> | undefined,
  signal?: AbortSignal,
): Promise<BuildView | undefined> {
  const res = await postJsonBuild(api, { context: digest }, fields, secrets, signal);
  if (res.ok) return api.readJson<BuildView>(res, BUILD);
  const err = await api.errorFrom(res);
  // Not stored for this project (404); a server without builds by digest (400 invalid_context).
  if (res.status === 404 || err.code === 'invalid_context') return undefined;
  throw err;
}

/** Builds a git repository (`url#ref:subdir`), which BuildKit fetches: nothing is uploaded. */
export async function submitGitBuild(
  api: KilnApi,
  git: string,
  fields: Record<string, unknown>,
  secrets: Record<string, Buffer> | undefined,
  signal?: AbortSignal,
): Promise<BuildView> {
  const res = await postJsonBuild(api, { git }, fields, secrets, signal);
  if (!res.ok) throw await api.errorFrom(res);
  return api.readJson<BuildView>(res, BUILD);
}

/** The same fields as a query string (docker-style repeated build-arg/label), for an upload. */
export function buildQuery(req: BuildRequest): URLSearchParams {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(buildFields(req))) {
    if (k === 'buildArgs' || k === 'labels') {
      const name = k === 'buildArgs' ? 'build-arg' : 'label';
      for (const [key, value] of Object.entries(v as Record<string, string>))
        q.append(name, `${key}=${value}`);
    } else q.set(k, typeof v === 'object' ? JSON.stringify(v) : String(v));
  }
  return q;
}

/** Past this, the spec goes in the body: Node's HTTP server refuses more than 16 KiB of headers. */
const MAX_QUERY_CHARS = 4096;

export interface UploadOptions {
  request: BuildRequest;
  /** The uncompressed context tar. */
  tar: Readable;
  signal?: AbortSignal;
  /** Compressed bytes handed to the connection so far. */
  onSent?: (bytes: number) => void;
  /** gzip level, or false to send the tar as it is. */
  gzip?: number | false;
  /** `tar` is gzip already (a context piped in compressed): sent as it is, as application/gzip. */
  gzipped?: boolean;
  /** Values for RUN --mount=type=secret, by id. */
  secrets?: Record<string, Buffer>;
}

/** The API's `secrets` spec field: text as it is, other bytes as {base64}. */
export function secretsField(secrets: Record<string, Buffer>): Record<string, string | { base64: string }> {
  return Object.fromEntries(
    Object.entries(secrets).map(([id, value]) => {
      const text = value.toString('utf8');
      return [id, Buffer.from(text, 'utf8').equals(value) ? text : { base64: value.toString('base64') }];
    }),
  );
}

/** A multipart/form-data body: the JSON `spec` part, then the `context` file part streamed from `context`. */
async function* multipartBody(
  boundary: string,
  spec: object,
  context: AsyncIterable<Buffer>,
  contentType: string,
): AsyncGenerator<Buffer> {
  yield Buffer.from(
    `--${boundary}\r\nContent-Disposition: form-data; name="spec"\r\nContent-Type: application/json\r\n\r\n${JSON.stringify(spec)}\r\n` +
      `--${boundary}\r\nContent-Disposition: form-data; name="context"; filename="context"\r\nContent-Type: ${contentType}\r\n\r\n`,
  );
  yield* context;
  yield Buffer.from(`\r\n--${boundary}--\r\n`);
}

/**
 * The API refuses gzip that inflates more than its ratio limit (a zip-bomb guard), which an
 * honest context of very compressible files can hit: such an upload is worth retrying uncompressed.
 */
export function isRatioRejection(err: unknown): boolean {
  return err instanceof CliError && err.code === 'context_too_large' && /decompress/i.test(err.message);
}

export async function submitBuild(
  api: KilnApi,
  opts: UploadOptions,
): Promise<{ build: BuildView; sent: number }> {
  let sent = 0;
  let streamError: Error | undefined;
  const counter = new Transform({
    transform(chunk: Buffer, _encoding, callback) {
      sent += chunk.length;
      opts.onSent?.(sent);
      callback(null, chunk);
    },
  });
  const onError = (err: Error | null) => {
    if (err) streamError ??= err;
  };
  const body =
    opts.gzip === false
      ? pipeline(opts.tar, counter, onError)
      : pipeline(opts.tar, createGzip({ level: opts.gzip ?? 6 }), counter, onError);
  const stop = (reason?: Error) => {
    if (!opts.tar.destroyed) opts.tar.destroy(reason);
    if (!body.destroyed) body.destroy(reason);
  };
  // Ctrl-C stops the body, not the request: once the server has the whole context it answers
  // with the build it created, which the caller can then cancel instead of leaving it behind.
  const { signal } = opts;
  const onAbort = () => stop(signal ? abortReason(signal) : undefined);
  signal?.addEventListener('abort', onAbort, { once: true });
  const contextType = opts.gzip === false && !opts.gzipped ? 'application/x-tar' : 'application/gzip';
  const secrets = opts.secrets && Object.keys(opts.secrets).length > 0 ? opts.secrets : undefined;
  const query = buildQuery(opts.request).toString();
  const inBody =
    secrets !== undefined || Object.keys(opts.request.buildArgs).length > 0 || query.length > MAX_QUERY_CHARS;
  const spec = { ...buildFields(opts.request), ...(secrets ? { secrets: secretsField(secrets) } : {}) };
  const boundary = `kiln-${randomUUID()}`;
  let res: HttpResponse;
  try {
    if (signal?.aborted) throw abortReason(signal);
    res = await api.request(inBody ? '/v1/builds' : `/v1/builds?${query}`, {
      method: 'POST',
      headers: {
        'content-type': inBody ? `multipart/form-data; boundary=${boundary}` : contextType,
        'idempotency-key': randomUUID(),
      },
      body: inBody ? multipartBody(boundary, spec, body, contextType) : body,
    });
    if (!res.ok) {
      // Read before the body stops: stopping it ends the request, and the connection with it.
      const refusal = await api.errorFrom(res);
      stop();
      throw refusal;
    }
    return { build: await api.readJson<BuildView>(res, BUILD), sent };
  } catch (err) {
    const readError = streamError;
    stop();
    if (signal?.aborted) throw abortReason(signal);
    // A failure to read the context is the reason, not the connection it broke.
    if (readError instanceof CliError) throw readError;
    if (err instanceof CliError && err.code !== 'unreachable') throw err;
    if (readError) throw new CliError(`sending the build context failed: ${readError.message}`);
    if (err instanceof CliError) throw err;
    throw new CliError(`uploading the build context failed: ${messageOf(err)}`);
  } finally {
    signal?.removeEventListener('abort', onAbort);
  }
}
