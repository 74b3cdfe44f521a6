import multipart from '@fastify/multipart';
import rateLimit from '@fastify/rate-limit';
import swagger from '@fastify/swagger';
import swaggerUi from '@fastify/swagger-ui';
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox';
import { AppError, findUnstorable } from '@kiln/core';
import Fastify, { type FastifyBaseLogger, type FastifyInstance } from 'fastify';
import { authenticator } from './auth.js';
import type { ApiDeps } from './deps.js';
import { clientErrorHandler, MAX_BODY_BYTES, registerErrorHandling, replyWithError } from './errors.js';
import { observeHttpDurations } from './metrics/http.js';
import { RequestLog } from './request-log.js';
import { adminRoutes } from './routes/admin.js';
import { builderDrainRoutes } from './routes/builder-drain.js';
import { builderRoutes } from './routes/builders.js';
import { buildRoutes } from './routes/builds.js';
import { endpointRoutes } from './routes/endpoints.js';
import { fileRoutes } from './routes/files.js';
import { createMetrics, opsRoutes } from './routes/ops.js';
import { registryRoutes } from './routes/registries.js';
import { operatorStatsRoutes, statsRoutes } from './routes/stats.js';
import { tokenRoutes } from './routes/tokens.js';
import { triggerRoutes } from './routes/triggers.js';
import { uiRoutes } from './routes/ui.js';
import { webhookRoutes } from './routes/webhooks.js';
import { sharedSchemas } from './schemas.js';
import { startStatsSampler } from './stats-sampler.js';

/** The HTTP API as a Fastify instance, not yet listening (tests use `inject` or `listen({port: 0})`). */
export async function buildApp(deps: ApiDeps): Promise<FastifyInstance> {
  const app = Fastify({
    loggerInstance: deps.logger as unknown as FastifyBaseLogger,
    // A slow or stalled upload must not hold a connection, a descriptor and a temp file for long.
    requestTimeout: deps.config.requestTimeoutSeconds * 1000,
    connectionTimeout: deps.config.connectionTimeoutSeconds * 1000,
    clientErrorHandler,
    // Node answers an HTTP/1.1 request without Host with an empty 400; refuseHostless answers it
    // in the API's error shape instead.
    http: { requireHostHeader: false },
    frameworkErrors: replyWithError,
    bodyLimit: MAX_BODY_BYTES,
    logController: new RequestLog(),
    // request.ip: the client's address from X-Forwarded-For only when the peer is a trusted proxy.
    ...(deps.config.trustedProxies.length > 0 ? { trustProxy: deps.config.trustedProxies } : {}),
    // Route schemas are TypeBox's: handlers get their params, query, headers and body typed from them.
  }).withTypeProvider<TypeBoxTypeProvider>();
  registerErrorHandling(app);
  refuseHostless(app);
  refuseUnstorableJson(app);
  // Live log streams never finish on their own: end them, or close() would wait for them.
  app.addHook('preClose', async () => deps.followers.stopAll());
  for (const schema of sharedSchemas) app.addSchema(schema);
  await app.register(multipart, {
    limits: {
      fileSize: deps.config.limits.maxContextBytes,
      files: 1,
      fields: 20,
      fieldSize: 1024 * 1024,
      parts: 25,
    },
    throwFileSizeLimit: true,
  });
  await app.register(swagger, {
    openapi: {
      info: { title: 'Kiln', version: '1', description: 'docker build --output as a service' },
      components: { securitySchemes: { bearer: { type: 'http', scheme: 'bearer' } } },
      security: [{ bearer: [] }],
    },
  });
  await app.register(swaggerUi, { routePrefix: '/docs' });

  const stopSampler = startStatsSampler(deps);
  app.addHook('onClose', stopSampler);
  const metrics = createMetrics(deps);
  observeHttpDurations(app, metrics.registry);
  await app.register(opsRoutes(deps, metrics));
  await app.register(await uiRoutes());
  if (deps.config.storage.kind === 'local')
    await app.register(fileRoutes(deps.storage, deps.config.storage.signingKey));
  // Webhooks authenticate by signature, not bearer token.
  await app.register(webhookRoutes(deps));
  // The operator's routes take KILN_OPERATOR_TOKEN, not a project's.
  await app.register(adminRoutes(deps));
  await app.register(operatorStatsRoutes(deps));
  await app.register(builderDrainRoutes(deps));
  await app.register(async (authed) => {
    authed.addHook('onRequest', authenticator(deps));
    if (deps.config.rateLimitPerMinute > 0) {
      const max = deps.config.rateLimitPerMinute;
      await authed.register(rateLimit, {
        max,
        timeWindow: 60_000,
        // After authentication, so the count is per project (minting tokens does not multiply
        // it); in Redis, so it holds across API replicas.
        hook: 'preHandler',
        keyGenerator: (req) => `project:${req.projectId}`,
        redis: deps.redis,
        nameSpace: 'kiln:ratelimit:',
        // Redis down must not take the API down with it.
        skipOnError: true,
        errorResponseBuilder: (_req, ctx) =>
          new AppError(
            'rate_limited',
            `more than ${max} requests a minute for this project; retry in ${ctx.after}`,
          ),
      });
    }
    authed.addHook('onResponse', async (req, reply) => {
      if (req.method === 'POST' && req.routeOptions.url === '/v1/builds' && reply.statusCode < 300) {
        metrics.uploadSeconds.observe(reply.elapsedTime / 1000);
      }
    });
    await authed.register(buildRoutes(deps));
    await authed.register(tokenRoutes(deps));
    await authed.register(triggerRoutes(deps));
    await authed.register(endpointRoutes(deps));
    await authed.register(registryRoutes(deps));
    await authed.register(builderRoutes(deps));
    await authed.register(statsRoutes(deps));
  });
  return app;
}

/** HTTP/1.1 requires a Host header (RFC 9112 §3.2): a request without one is a 400, as Node would answer. */
function refuseHostless(app: FastifyInstance): void {
  app.addHook('onRequest', async (req) => {
    if (req.raw.httpVersion === '1.1' && req.headers.host === undefined) {
      throw new AppError('invalid_request', 'send a Host header: HTTP/1.1 requires one');
    }
  });
}

/**
 * Fastify's own JSON parser (prototype poisoning refused as before), then one check for every
 * JSON body, and one for every request's path parameters: a string PostgreSQL cannot store (a
 * NUL, a lone surrogate) is the caller's 400 here, whichever route and column it was headed for,
 * not a 500 from the driver. (Query fields are checked where they are parsed, as spec fields.)
 */
function refuseUnstorableJson(app: FastifyInstance): void {
  app.addHook('preValidation', async (req) => {
    const found = findUnstorable(req.params);
    if (found) throw new AppError('invalid_request', `the path is not text Kiln can store: ${found}`);
  });
  const parse = app.getDefaultJsonParser('error', 'error');
  app.removeContentTypeParser('application/json');
  app.addContentTypeParser('application/json', { parseAs: 'string' }, (req, body, done) => {
    // parseAs 'string' gives a string; the type also allows the Buffer of parseAs 'buffer'.
    parse(req, body.toString(), (err, value) => {
      if (err) return done(err);
      const found = findUnstorable(value);
      if (found)
        return done(new AppError('invalid_request', `the JSON body is not text Kiln can store: ${found}`));
      done(null, value);
    });
  });
}
