import { AppError, type ErrorCode, httpStatusFor } from '@kiln/core';
import type { FastifyError, FastifyInstance } from 'fastify';

/** The one place errors become HTTP answers: `{error: {code, message}}`, never a stack. */
export function registerErrorHandling(app: FastifyInstance): void {
  app.setNotFoundHandler((req, reply) => {
    reply
      .code(404)
      .send({ error: { code: 'not_found', message: `no route ${req.method} ${req.url.split('?')[0]}` } });
  });
  app.setErrorHandler((err: FastifyError | AppError | Error, req, reply) => {
    const { code, message } = classify(err);
    const status = httpStatusFor(code);
    if (status >= 500 && code !== 'unavailable') req.log.error({ err }, 'request failed');
    else req.log.info({ code, message }, 'request rejected');
    if (code === 'rate_limited') reply.header('Retry-After', '1');
    // Rejected before the upload was read: the rest of the body would be parsed as the next
    // request on this keep-alive connection. Close it after the answer instead.
    if (!req.raw.complete) reply.header('connection', 'close');
    reply.code(status).send({ error: { code, message } });
  });
}

function classify(err: FastifyError | AppError | Error): { code: ErrorCode; message: string } {
  if (err instanceof AppError) return { code: err.code, message: err.message };
  const fe = err as FastifyError;
  if (fe.validation) return { code: 'invalid_request', message: fe.message };
  if (fe.code === 'FST_ERR_CTP_INVALID_MEDIA_TYPE')
    return { code: 'unsupported_media_type', message: fe.message };
  if (fe.code === 'FST_ERR_CTP_BODY_TOO_LARGE' || fe.statusCode === 413) {
    return { code: 'context_too_large', message: fe.message };
  }
  if (isDatabaseDown(err))
    return { code: 'unavailable', message: 'the database is unavailable; try again shortly' };
  if (typeof fe.statusCode === 'number' && fe.statusCode >= 400 && fe.statusCode < 500) {
    return { code: 'invalid_request', message: fe.message };
  }
  return { code: 'internal', message: 'internal error' };
}

/** Connection-level failures of PostgreSQL (refused, reset, shutting down) are 503s, not 500s. */
export function isDatabaseDown(err: unknown): boolean {
  const text = `${(err as { code?: string }).code ?? ''} ${(err as Error).message ?? ''}`;
  return /ECONNREFUSED|ECONNRESET|57P01|57P03|Connection terminated|connect ETIMEDOUT|P1001|P1017|DatabaseNotReachable/i.test(
    text,
  );
}
