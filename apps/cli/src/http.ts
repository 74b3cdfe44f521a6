/**
 * The CLI's HTTP requests, on node:http(s) rather than fetch. Node loads fetch's engine at its
 * first use (undici's JavaScript and its HTTP parser compiled from WebAssembly): ~45 ms here, a
 * sixth of a `kiln build` whose context is unchanged and whose whole exchange is one small POST.
 * This is only what the CLI asks of HTTP: a body that is text or a stream, the answer's status,
 * headers and body as a Node stream. Redirects are not followed; Kiln's API and signed URLs
 * answer without them.
 */
import http from 'node:http';
import { Readable } from 'node:stream';

/** How long a request waits for the next bytes of its answer by default (as fetch does). */
const IDLE_TIMEOUT_MS = 300_000;

/**
 * Bytes of an answer read whole (JSON, an error): far above a page of 100 builds, so only a
 * server that never stops sending gets there, instead of the CLI's memory.
 */
export const MAX_ANSWER_BYTES = 16 * 1024 * 1024;

export class AnswerTooLargeError extends Error {
  constructor(readonly maxBytes: number) {
    super(`the answer is larger than ${maxBytes} bytes`);
    this.name = 'AnswerTooLargeError';
  }
}

export type RequestBody = string | Buffer | AsyncIterable<Buffer>;

export interface RequestOptions {
  method?: string;
  /** Names in lower case. */
  headers?: Record<string, string>;
  body?: RequestBody;
  signal?: AbortSignal;
  /** Silence on the connection after which the request fails; 300 s. */
  idleTimeoutMs?: number;
}

/** An answer whose headers have come; its body is read from `body` or by text(). */
export class HttpResponse {
  constructor(private readonly message: http.IncomingMessage) {}

  get status(): number {
    return this.message.statusCode ?? 0;
  }

  get statusText(): string {
    return this.message.statusMessage ?? '';
  }

  get ok(): boolean {
    return this.status >= 200 && this.status < 300;
  }

  header(name: string): string | undefined {
    const value = this.message.headers[name.toLowerCase()];
    return Array.isArray(value) ? value.join(', ') : value;
  }

  get body(): Readable {
    return this.message;
  }

  /** The whole body as text; AnswerTooLargeError past `maxBytes` (the rest is not read). */
  async text(maxBytes = MAX_ANSWER_BYTES): Promise<string> {
    const chunks: Buffer[] = [];
    let bytes = 0;
    for await (const chunk of this.message) {
      bytes += (chunk as Buffer).length;
      if (bytes > maxBytes) {
        this.message.destroy();
        throw new AnswerTooLargeError(maxBytes);
      }
      chunks.push(chunk as Buffer);
    }
    return Buffer.concat(chunks).toString('utf8');
  }
}

/**
 * Sends a request; resolves when the answer's headers come, which may be before a streamed body
 * is all sent (a refusal mid-upload): the caller then stops its stream. Rejects with the
 * connection's error (`connect ECONNREFUSED …`), or the signal's reason's AbortError.
 */
export async function request(url: string, opts: RequestOptions = {}): Promise<HttpResponse> {
  const target = new URL(url);
  if (target.protocol !== 'https:' && target.protocol !== 'http:') {
    throw new Error(`unsupported URL scheme ${target.protocol} in ${url}`);
  }
  // Loaded only for https, so that plain-HTTP commands do not pay for TLS.
  const transport = target.protocol === 'https:' ? await import('node:https') : http;
  const headers: Record<string, string | number> = { ...opts.headers };
  const { body } = opts;
  if (typeof body === 'string' || Buffer.isBuffer(body)) headers['content-length'] = Buffer.byteLength(body);
  return new Promise<HttpResponse>((resolve, reject) => {
    const req = transport.request(target, {
      method: opts.method ?? 'GET',
      headers,
      ...(opts.signal ? { signal: opts.signal } : {}),
    });
    const idle = opts.idleTimeoutMs ?? IDLE_TIMEOUT_MS;
    let answer: http.IncomingMessage | undefined;
    req.setTimeout(idle, () => {
      const err = new Error(`${target.host} sent nothing for ${idle / 1000} s`);
      // The answer's reader gets this reason, not the bare "aborted" of its torn connection.
      answer?.destroy(err);
      req.destroy(err);
    });
    req.once('error', reject);
    req.once('response', (message) => {
      answer = message;
      // The body's own errors (a connection lost mid-answer) reach whoever reads it.
      req.off('error', reject);
      req.on('error', () => {});
      // Node frees a kept-alive socket at the body's end, which an unread body never reaches,
      // empty or not, and the socket then holds the process open. An empty one is ended here,
      // so a caller that only needs the status (a 204) need not read it.
      if (
        message.statusCode === 204 ||
        message.statusCode === 304 ||
        message.headers['content-length'] === '0'
      ) {
        message.resume();
      }
      resolve(new HttpResponse(message));
    });
    if (body === undefined || typeof body === 'string' || Buffer.isBuffer(body)) {
      req.end(body);
    } else {
      // Not pipeline(): a failed request must leave the body to its owner, whose own error
      // handling would take pipeline's destroy for a failure to read it. A failed body does fail
      // the request, which rejects above unless the answer came first.
      const source = body instanceof Readable ? body : Readable.from(body);
      source.once('error', (err) => req.destroy(err));
      // A body its owner stopped (destroyed without an error: the server refused it early)
      // must not leave the request half-sent on a socket that then holds the process open.
      source.once('close', () => {
        if (!source.readableEnded) req.destroy();
      });
      source.pipe(req);
    }
  });
}
