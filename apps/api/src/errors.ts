import { AppError, type ErrorCode, httpStatusFor, isDatabaseUnavailable } from '@kiln/core';
import type { FastifyError, FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { mediaType } from './media-type.js';

/** Fastify's bodyLimit: what a JSON body (or a form field) may hold. */
export const MAX_BODY_BYTES = 1024 * 1024;

/** The one place errors become HTTP answers: `{error: {code, message}}`, never a stack. */
export function registerErrorHandling(app: FastifyInstance): void {
  app.setNotFoundHandler((req, reply) => {
    reply
      .code(404)
      .send({ error: { code: 'not_found', message: `no route ${req.method} ${req.url.split('?')[0]}` } });
  });
  app.setErrorHandler(replyWithError);
}

/**
 * The answer to a failed request, from the error handler, or from Fastify's `frameworkErrors`
 * for what its router refuses before any route (a bad URL encoding, a path parameter too long).
 */
export async function replyWithError(
  err: FastifyError | AppError | Error,
  req: FastifyRequest,
  reply: FastifyReply,
): Promise<void> {
  const { code, message } = classify(err, req);
  const status = httpStatusFor(code);
  if (status >= 500 && code !== 'unavailable') req.log.error({ err }, 'request failed');
  else req.log.info({ code, message }, 'request rejected');
  if (code === 'rate_limited' && !reply.hasHeader('retry-after')) reply.header('Retry-After', '1');
  // Rejected before the upload was read. A client still writing its body would see the
  // connection reset instead of this answer, so read (and drop) a bounded remainder first;
  // if it does not end soon, close the connection after answering so the leftover bytes are
  // not taken for the next request.
  if (!req.raw.complete) await drainBriefly(req.raw);
  if (!req.raw.complete) reply.header('connection', 'close');
  reply.code(status).send({ error: { code, message } });
}

/**
 * Fastify's `clientErrorHandler`: requests Node's HTTP parser refuses (a 100 KB header, a bad
 * header byte) never reach the routes. Answer them in the API's error shape, without logging
 * their raw bytes (they may hold a token).
 */
export function clientErrorHandler(err: NodeJS.ErrnoException, socket: import('node:net').Socket): void {
  if (!socket.writable) {
    socket.destroy();
    return;
  }
  const [status, code, message] = clientErrorAnswer(err.code);
  const body = JSON.stringify({ error: { code, message } });
  socket.end(
    `HTTP/1.1 ${status}\r\n` +
      `content-type: application/json\r\ncontent-length: ${Buffer.byteLength(body)}\r\nconnection: close\r\n\r\n${body}`,
  );
}

/**
 * Status line, error code and message for what Node's HTTP server refused (its parser, in words a
 * caller can act on) or timed out.
 */
function clientErrorAnswer(code: string | undefined): [string, ErrorCode, string] {
  const bad = (message: string): [string, ErrorCode, string] => [
    '400 Bad Request',
    'invalid_request',
    message,
  ];
  switch (code) {
    case 'HPE_HEADER_OVERFLOW':
      return ['431 Request Header Fields Too Large', 'invalid_request', 'the request headers are too large'];
    // Node's own requestTimeout (KILN_REQUEST_TIMEOUT_SECONDS), when its check comes first.
    case 'ERR_HTTP_REQUEST_TIMEOUT':
      return ['408 Request Timeout', 'request_timeout', 'the request was not received in time'];
    case 'HPE_INVALID_HEADER_TOKEN':
      return bad('a request header has a character HTTP does not allow');
    case 'HPE_UNEXPECTED_CONTENT_LENGTH':
    case 'HPE_INVALID_TRANSFER_ENCODING':
      return bad('send either Content-Length or Transfer-Encoding: chunked, not both');
    default:
      return bad(`the request is not valid HTTP (${code ?? 'parse error'})`);
  }
}

const DRAIN_BYTES = 16 * 1024 * 1024;
const DRAIN_MS = 2000;

/** Discards what is left of a request body, up to DRAIN_BYTES or DRAIN_MS, whichever comes first. */
function drainBriefly(body: import('node:http').IncomingMessage): Promise<void> {
  return new Promise((resolve) => {
    let seen = 0;
    const done = () => {
      clearTimeout(timer);
      body.off('data', onData);
      body.off('end', done);
      body.off('close', done);
      body.off('error', done);
      resolve();
    };
    const onData = (chunk: Buffer) => {
      seen += chunk.length;
      if (seen > DRAIN_BYTES) done();
    };
    const timer = setTimeout(done, DRAIN_MS);
    body.on('data', onData);
    body.on('end', done);
    body.on('close', done);
    body.on('error', done);
    body.resume();
  });
}

/**
 * What ioredis rejects with while Redis cannot be reached: the API's connection neither queues
 * commands nor retries them long (services.ts), so these arrive at once, and are 503s.
 */
const REDIS_UNAVAILABLE =
  /^(Stream isn't writeable and enableOfflineQueue options is false|Connection is closed\.|Reached the max retries per request limit)/;

function isRedisUnavailable(err: Error): boolean {
  return err.name === 'MaxRetriesPerRequestError' || REDIS_UNAVAILABLE.test(err.message);
}

function classify(
  err: FastifyError | AppError | Error,
  req: FastifyRequest,
): { code: ErrorCode; message: string } {
  if (err instanceof AppError) return { code: err.code, message: err.message };
  const fe = err as FastifyError;
  if (fe.validation) return { code: 'invalid_request', message: fe.message };
  if (fe.code === 'FST_ERR_MAX_PARAM_LENGTH')
    return { code: 'invalid_request', message: 'a path parameter (an ID or name) is too long' };
  if (fe.code === 'FST_ERR_BAD_URL')
    return { code: 'invalid_request', message: 'the path is not valid percent-encoding' };
  if (fe.code === 'FST_ERR_CTP_INVALID_MEDIA_TYPE')
    return { code: 'unsupported_media_type', message: fe.message };
  // Form limits (files, fields, parts) are about the form's shape, not the context's size.
  if (fe.code === 'FST_FILES_LIMIT' || fe.code === 'FST_FIELDS_LIMIT' || fe.code === 'FST_PARTS_LIMIT') {
    const what = fe.code === 'FST_FILES_LIMIT' ? 'send one file part, named "context"' : fe.message;
    return { code: 'invalid_request', message: `the form has too many parts: ${what}` };
  }
  if (fe.code === 'FST_INVALID_MULTIPART_CONTENT_TYPE' || /boundary|multipart/i.test(fe.message ?? '')) {
    return { code: 'invalid_request', message: `malformed multipart/form-data: ${fe.message}` };
  }
  if (fe.code === 'FST_ERR_CTP_BODY_TOO_LARGE' || fe.statusCode === 413) {
    // A JSON body (a git build, a token, a trigger) is no context, however large.
    return mediaType(req.headers['content-type']) === 'application/json'
      ? { code: 'payload_too_large', message: `a JSON body may be at most ${MAX_BODY_BYTES} bytes` }
      : { code: 'context_too_large', message: fe.message };
  }
  if (isRedisUnavailable(err))
    return { code: 'unavailable', message: 'Redis is unavailable; try again shortly' };
  // Connection-level failures of PostgreSQL (refused, reset, shutting down) are 503s, not 500s.
  if (isDatabaseUnavailable(err))
    return { code: 'unavailable', message: 'the database is unavailable; try again shortly' };
  if (typeof fe.statusCode === 'number' && fe.statusCode >= 400 && fe.statusCode < 500) {
    return { code: 'invalid_request', message: fe.message };
  }
  return { code: 'internal', message: 'internal error' };
}
