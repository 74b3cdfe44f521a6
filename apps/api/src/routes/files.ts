import { AppError, LOCAL_FILES_PATH, type ObjectStorage, verifyLocalSignature } from '@kiln/core';
import type { FastifyInstance } from 'fastify';

/**
 * Downloads from local-directory storage through URLs the API signed itself (HMAC, expiry).
 * Supports single byte ranges, so interrupted downloads can resume.
 */
export function fileRoutes(storage: ObjectStorage, signingKey: string) {
  return async (app: FastifyInstance) => {
    app.get(`${LOCAL_FILES_PATH}*`, { schema: { hide: true } }, async (req, reply) => {
      // Fastify has decoded the path already.
      const key = (req.params as { '*': string })['*'];
      const q = req.query as Record<string, string | undefined>;
      const verified = verifyLocalSignature(
        { key, expires: q.expires ?? '', filename: q.filename, sig: q.sig ?? '', method: 'GET' },
        signingKey,
      );
      const range = parseRange(req.headers.range);
      const object = await storage.get(verified.key, range ? { range } : {}).catch(async (err: unknown) => {
        // RFC 9110: a 416 names the size, so a client resuming a complete download knows it is.
        if (err instanceof AppError && err.code === 'range_not_satisfiable') {
          const info = await storage.head(verified.key).catch(() => undefined);
          if (info) reply.header('content-range', `bytes */${info.size}`);
        }
        throw err;
      });
      reply.header('accept-ranges', 'bytes');
      reply.type('application/octet-stream');
      if (verified.filename)
        reply.header(
          'content-disposition',
          `attachment; filename="${verified.filename.replace(/["\\\r\n]/g, '_')}"`,
        );
      reply.header('content-length', object.contentLength);
      if (object.range) {
        reply
          .code(206)
          .header('content-range', `bytes ${object.range.start}-${object.range.end}/${object.size}`);
      }
      return reply.send(object.body);
    });
  };
}

function parseRange(header: string | undefined): { start: number; end?: number } | undefined {
  if (!header) return undefined;
  const m = /^bytes=(\d+)-(\d*)$/.exec(header.trim());
  if (!m) throw new AppError('invalid_request', 'only a single "bytes=START-[END]" range is supported');
  return { start: Number(m[1]), ...(m[2] ? { end: Number(m[2]) } : {}) };
}
