import type { IncomingMessage } from 'node:http';
import { AppError } from '@kiln/core';
import type { FastifyInstance } from 'fastify';
import type { ApiDeps } from '../deps.js';
import { buildErrors } from '../schemas.js';
import { github, gitlab } from '../webhooks/providers.js';
import { receivePush } from '../webhooks/receive-push.js';

/** GitHub caps payloads at 25 MB, but a push payload lists at most 20 commits in detail. */
const MAX_PAYLOAD_BYTES = 5 * 1024 * 1024;

const answer = {
  type: 'object',
  properties: {
    delivery: { type: 'string' },
    ignored: { type: 'boolean' },
    reason: { type: 'string' },
    builds: {
      type: 'array',
      items: {
        type: 'object',
        properties: {
          id: { type: 'string' },
          status: { type: 'string' },
          trigger: { type: ['string', 'null'] },
        },
      },
    },
  },
} as const;

/**
 * Inbound webhook receivers, outside bearer authentication: a push delivery proves itself with the HMAC
 * signature (GitHub, X-Hub-Signature-256) or the token (GitLab, X-Gitlab-Token) of a trigger
 * configured for its repository (routes/triggers.ts). A push that matches builds (202); anything
 * else verified is answered 200 `{ignored: true, reason}`; a forgery 401 `invalid_signature`.
 */
export function webhookRoutes(deps: ApiDeps) {
  return async (app: FastifyInstance) => {
    // The signature covers the exact bytes: keep them raw, whatever the content type says.
    app.removeAllContentTypeParsers();
    app.addContentTypeParser('*', (req, payload, done) => {
      readLimited(payload, Number(req.headers['content-length'] ?? 0), MAX_PAYLOAD_BYTES).then(
        (body) => done(null, body),
        (err: Error) => done(err),
      );
    });

    for (const provider of [github, gitlab]) {
      app.post(
        `/v1/hooks/${provider.name}`,
        {
          schema: {
            summary: `Receive a ${provider.name === 'github' ? 'GitHub' : 'GitLab'} push delivery (inbound webhook → build)`,
            security: [],
            response: { 200: answer, 202: answer, ...buildErrors },
          },
        },
        async (req, reply) => {
          const headers = provider.readHeaders(req.headers);
          const raw = Buffer.isBuffer(req.body) ? req.body : Buffer.alloc(0);
          const receipt = await receivePush(
            deps,
            provider,
            headers,
            raw,
            parsePayload(req.headers['content-type'], raw),
          );
          // `delivery` in the answer is the push delivery id (the API's field name).
          if (receipt.outcome === 'ignored') {
            return reply
              .code(200)
              .send({ ignored: true, reason: receipt.reason, delivery: receipt.pushDeliveryId });
          }
          return reply.code(202).send({
            delivery: receipt.pushDeliveryId,
            builds: receipt.builds.map((b) => ({ id: b.id, status: b.status, trigger: b.triggerId })),
          });
        },
      );
    }
  };
}

/**
 * The body, up to `limit` bytes. Past it the stream is left flowing rather than destroyed, so the
 * error handler can still answer 413 instead of the client seeing a reset.
 */
function readLimited(body: IncomingMessage, declared: number, limit: number): Promise<Buffer> {
  const tooLarge = () =>
    new AppError('payload_too_large', `a webhook payload may be at most ${limit / (1024 * 1024)} MiB`);
  if (declared > limit) return Promise.reject(tooLarge());
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    const stop = () => {
      body.off('data', onData);
      body.off('end', onEnd);
      body.off('error', onError);
    };
    const onData = (chunk: Buffer) => {
      size += chunk.length;
      if (size > limit) {
        stop();
        body.resume();
        reject(tooLarge());
      } else chunks.push(chunk);
    };
    const onEnd = () => {
      stop();
      resolve(Buffer.concat(chunks));
    };
    const onError = (err: Error) => {
      stop();
      reject(new AppError('invalid_request', `the payload did not arrive: ${err.message}`));
    };
    body.on('data', onData);
    body.on('end', onEnd);
    body.on('error', onError);
  });
}

/** JSON, or a form with a `payload` field (GitHub's other content type). */
function parsePayload(contentType: string | undefined, raw: Buffer): Record<string, unknown> {
  const type = (contentType ?? '').split(';')[0]?.trim().toLowerCase();
  let json: string;
  if (type === 'application/json') json = raw.toString('utf8');
  else if (type === 'application/x-www-form-urlencoded') {
    const field = new URLSearchParams(raw.toString('utf8')).get('payload');
    if (field === null) throw new AppError('invalid_request', 'the form has no "payload" field');
    json = field;
  } else {
    throw new AppError(
      'unsupported_media_type',
      `send the payload as application/json (or a form with a "payload" field), not ${type || 'no content type'}`,
    );
  }
  let value: unknown;
  try {
    value = JSON.parse(json);
  } catch {
    throw new AppError('invalid_request', 'the payload is not valid JSON');
  }
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    throw new AppError('invalid_request', 'the payload must be a JSON object');
  }
  return value as Record<string, unknown>;
}
