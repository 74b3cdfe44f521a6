import type { IncomingMessage } from 'node:http';
import rateLimit from '@fastify/rate-limit';
import { AppError, findUnstorable } from '@kiln/core';
import type { FastifyInstance, FastifyRequest } from 'fastify';
import { clientAddressKey } from '../client-address.js';
import { ConcurrencyLimit } from '../concurrency-limit.js';
import type { ApiDeps } from '../deps.js';
import { mediaType } from '../media-type.js';
import { buildErrors } from '../schemas.js';
import { ArrivingBodies } from '../webhooks/arriving-bodies.js';
import { PayloadFields } from '../webhooks/payload-fields.js';
import { github, gitlab, type Provider, type PushDeliveryHeaders } from '../webhooks/providers.js';
import { receivePush } from '../webhooks/receive-push.js';
import { verifyPushDelivery } from '../webhooks/verify-delivery.js';

declare module 'fastify' {
  interface FastifyRequest {
    /** The push delivery's headers, read (and refused when wrong) before its body. */
    pushHeaders: PushDeliveryHeaders;
    /** The verified delivery's repository and scope: what the per-repository rate limit counts against. */
    pushRepository: string;
  }
}

/** GitHub caps payloads at 25 MB, but a push payload lists at most 20 commits in detail. */
const MAX_PAYLOAD_BYTES = 5 * 1024 * 1024;
/**
 * What a payload may nest and hold, and how long reading it may take (payload-fields.ts): push
 * payloads nest about 5 levels and hold some thousands of objects (up to 2,048 commits), and a
 * 5 MiB one parses in tens of milliseconds, within a few tens of MiB of heap.
 */
const PAYLOAD_LIMITS = { maxDepth: 32, maxContainers: 100_000, timeoutMs: 5_000, maxHeapMb: 128 };
/** Bytes of webhook payloads being read at once, per API; past it a payload is refused (429). */
const MAX_ARRIVING_BYTES = 32 * 1024 * 1024;
/** GitHub gives up on a delivery after 10 s; a body still arriving then is no provider's. */
const BODY_TIMEOUT_MS = 10_000;
/** A body still arriving after this long gives way (408) when a newer one needs its room. */
const YIELD_AFTER_MS = 2_000;

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
    // Triggers whose project refused the build while others built (one refusing alone fails
    // the delivery with its error).
    refused: {
      type: 'array',
      items: {
        type: 'object',
        properties: {
          trigger: { type: 'string' },
          error: {
            type: 'object',
            properties: { code: { type: 'string' }, message: { type: 'string' } },
          },
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
 *
 * Anyone can reach them, so each step is bounded before it runs: a per-address rate limit and the
 * headers are checked before the body is read; parsing and verification run a few at a time; a
 * repository's verified deliveries are rate-limited too (after verification, so that forgeries
 * naming a repository cannot use up its allowance).
 */
export function webhookRoutes(deps: ApiDeps) {
  const limits = deps.config.webhooks;
  const verifying = new ConcurrencyLimit(limits.concurrency, 2 * limits.concurrency, 'webhook deliveries');
  // Bounded in bytes, not in requests: a provider delivers many at once from few addresses.
  const arriving = new ArrivingBodies(MAX_ARRIVING_BYTES, YIELD_AFTER_MS);
  // One thread per read `verifying` lets run at once, made when first needed.
  const fields = new PayloadFields(PAYLOAD_LIMITS);
  return async (app: FastifyInstance) => {
    app.addHook('onClose', () => fields.close());
    const perRepository = await registerRateLimits(app, deps);
    // The signature covers the exact bytes: keep them raw, whatever the content type says.
    app.removeAllContentTypeParsers();
    app.addContentTypeParser('*', (req, payload, done) => {
      readLimited(payload, Number(req.headers['content-length'] ?? 0), arriving).then(
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
          // After the per-address limit (an onRequest hook), before the body is read.
          preParsing: async (req) => {
            req.pushHeaders = provider.readHeaders(req.headers);
          },
        },
        async (req, reply) => {
          const headers = req.pushHeaders;
          const raw = Buffer.isBuffer(req.body) ? req.body : Buffer.alloc(0);
          const { payload, ...verified } = await verifying.run(async () => {
            const payload = await readPayload(fields, provider, req.headers['content-type'], raw);
            checkStorable(payload);
            return { payload, ...(await verifyPushDelivery(deps, provider, headers, raw, payload)) };
          });
          req.pushRepository = `${provider.name}:${verified.repository}:${verified.scope}`;
          await perRepository?.(req);
          const receipt = await receivePush(deps, provider, headers, payload, verified);
          // `delivery` in the answer is the push delivery id (the API's field name).
          if (receipt.outcome === 'ignored') {
            return reply
              .code(200)
              .send({ ignored: true, reason: receipt.reason, delivery: receipt.pushDeliveryId });
          }
          return reply.code(202).send({
            delivery: receipt.pushDeliveryId,
            builds: receipt.builds.map((b) => ({ id: b.id, status: b.status, trigger: b.triggerId })),
            ...(receipt.refused.length > 0
              ? {
                  refused: receipt.refused.map(({ triggerId, error }) => ({
                    trigger: triggerId,
                    error: { code: error.code, message: error.message },
                  })),
                }
              : {}),
          });
        },
      );
    }
  };
}

/**
 * Registers the per-address limit (an onRequest hook: counted before the body is read) and
 * returns the per-repository one, for the handler to apply once the delivery is verified. Both
 * count in Redis like the per-token limit (app.ts), so they hold across API replicas. The address
 * is the TCP peer's, or the client's a trusted proxy forwarded (KILN_TRUSTED_PROXIES).
 */
async function registerRateLimits(
  app: FastifyInstance,
  deps: ApiDeps,
): Promise<((req: FastifyRequest) => Promise<void>) | undefined> {
  const { perAddressPerMinute, perRepositoryPerMinute } = deps.config.webhooks;
  if (perAddressPerMinute === 0 && perRepositoryPerMinute === 0) return undefined;
  await app.register(rateLimit, {
    // The per-address limit is the plugin's own, on every route registered after it.
    global: perAddressPerMinute > 0,
    max: perAddressPerMinute,
    timeWindow: 60_000,
    hook: 'onRequest',
    keyGenerator: (req) => `address:${clientAddressKey(req.ip)}`,
    redis: deps.redis,
    nameSpace: 'kiln:ratelimit:hooks:',
    // Redis down must not take the receivers down with it.
    skipOnError: true,
    errorResponseBuilder: (_req, ctx) =>
      new AppError(
        'rate_limited',
        `more than ${perAddressPerMinute} webhook requests a minute from this address; retry in ${ctx.after}`,
      ),
  });
  if (perRepositoryPerMinute === 0) return undefined;
  const count = app.createRateLimit({
    max: perRepositoryPerMinute,
    keyGenerator: (req) => `repository:${req.pushRepository}`,
  });
  return async (req) => {
    const result = await count(req);
    if (!result.isAllowed && result.isExceeded) {
      throw new AppError(
        'rate_limited',
        `more than ${perRepositoryPerMinute} webhook deliveries a minute for this repository's triggers; retry in ${result.ttlInSeconds} s`,
      );
    }
  };
}

/**
 * The body, up to MAX_PAYLOAD_BYTES, within BODY_TIMEOUT_MS, counted against the bodies being
 * read (`arriving`), where it may have to give way to a newer one after YIELD_AFTER_MS. Past any
 * of them the stream is left flowing rather than destroyed, so the error handler can still
 * answer (413, 408, 429) instead of the client seeing a reset.
 */
function readLimited(body: IncomingMessage, declared: number, arriving: ArrivingBodies): Promise<Buffer> {
  const limit = MAX_PAYLOAD_BYTES;
  const tooLarge = () =>
    new AppError('payload_too_large', `a webhook payload may be at most ${limit / (1024 * 1024)} MiB`);
  if (declared > limit) return Promise.reject(tooLarge());
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    const refuse = (err: AppError) => {
      stop();
      body.resume();
      reject(err);
    };
    const reader = arriving.open(() =>
      refuse(
        new AppError(
          'request_timeout',
          `the webhook payload was still arriving after ${YIELD_AFTER_MS / 1000} s and gave way to newer ones (providers send it at once)`,
        ),
      ),
    );
    const timer = setTimeout(
      () =>
        refuse(
          new AppError(
            'request_timeout',
            `the webhook payload did not arrive within ${BODY_TIMEOUT_MS / 1000} s (providers send it at once)`,
          ),
        ),
      BODY_TIMEOUT_MS,
    );
    const stop = () => {
      clearTimeout(timer);
      reader.close();
      body.off('data', onData);
      body.off('end', onEnd);
      body.off('error', onError);
    };
    const onData = (chunk: Buffer) => {
      size += chunk.length;
      if (size > limit) refuse(tooLarge());
      else if (!reader.take(chunk.length))
        refuse(
          new AppError(
            'rate_limited',
            `more than ${MAX_ARRIVING_BYTES / (1024 * 1024)} MiB of webhook payloads are arriving at once; retry shortly`,
          ),
        );
      else chunks.push(chunk);
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

/**
 * The fields of the payload `provider` reads, from JSON or a form with a `payload` field (GitHub's
 * other content type), read off the event loop (payload-fields.ts).
 */
async function readPayload(
  fields: PayloadFields,
  provider: Provider,
  contentType: string | undefined,
  raw: Buffer,
): Promise<Record<string, unknown>> {
  const type = mediaType(contentType);
  if (type !== 'application/json' && type !== 'application/x-www-form-urlencoded') {
    throw new AppError(
      'unsupported_media_type',
      `send the payload as application/json (or a form with a "payload" field), not ${type || 'no content type'}`,
    );
  }
  return fields.read(raw, type === 'application/x-www-form-urlencoded', provider.fields);
}

/** No provider sends text PostgreSQL cannot store; refused before any of it reaches a query. */
function checkStorable(payload: Record<string, unknown>): void {
  const unstorableText = findUnstorable(payload);
  if (unstorableText)
    throw new AppError('invalid_request', `the payload is not text Kiln can store: ${unstorableText}`);
}
