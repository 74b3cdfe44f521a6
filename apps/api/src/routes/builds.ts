import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import { BuildStatusSchema } from '@kiln/contract/schemas';
import {
  AppError,
  CANCEL_REQUEST_TTL_SECONDS,
  CHANNEL_CANCEL,
  cancelRequestKey,
  FINAL_STATUSES,
  getIfStored,
  MAX_LISTED_STEPS,
  parseBuildSteps,
  SpanKind,
  stepsKey,
} from '@kiln/core';
import { Type } from 'typebox';
import { buildRequestSchema, RAW_CONTEXT_TYPES, submitBuild } from '../build-request.js';
import { artifactFilename, buildView, provenanceOf } from '../build-view.js';
import type { ApiDeps } from '../deps.js';
import { followLogs, readLogs } from '../logs.js';
import { buildErrors, cursor, idParams, pageLimit } from '../schemas.js';
import { UploadSlots } from '../upload-slots.js';

/** A queued build is accepted (202); one answered from the result cache is created done (201). */
const CREATE_STATUS = { queued: 202, cached: 201, existing: 200 } as const;

export function buildRoutes(deps: ApiDeps): FastifyPluginAsyncTypebox {
  const { storage, config } = deps;
  const uploads = new UploadSlots(config.limits.maxUploadsPerProject, config.limits.uploadSpoolBytes);
  const view = (b: Parameters<typeof buildView>[0]) =>
    buildView(b, storage, config.urlTtlSeconds, config.publicUrl);

  const findBuild = async (projectId: string, id: string) => {
    const build = await deps.builds.projectBuild(projectId, id);
    // Another project's build is indistinguishable from a missing one.
    if (!build) throw new AppError('not_found', `no build ${id}`);
    return build;
  };
  /** A build whose stored `what` (artifact, provenance) is asked for: 410 once retention took it. */
  const findStored = async (projectId: string, id: string, what: string) => {
    const build = await findBuild(projectId, id);
    if (build.status === 'expired')
      throw new AppError('gone', `the ${what} of build ${build.id} has expired`);
    return build;
  };
  const signed = (key: string, filename: string) =>
    storage.signedUrl(key, { expiresInSeconds: config.urlTtlSeconds, filename });

  return async (app) => {
    for (const type of RAW_CONTEXT_TYPES) {
      app.addContentTypeParser(type, (_req, payload, done) => done(null, payload));
    }

    app.post(
      '/v1/builds',
      {
        config: { scope: 'build' },
        schema: {
          summary:
            'Start a build from an uploaded context (tar, gzip or multipart) or a git repository (JSON {git, ...spec}) and an export spec',
          ...buildRequestSchema,
          // 202 queued; 201 answered from the result cache (already succeeded); 200 an idempotent retry.
          response: {
            200: { $ref: 'Build#' },
            201: { $ref: 'Build#' },
            202: { $ref: 'Build#' },
            ...buildErrors,
          },
        },
      },
      // The root of the build's trace (or a child of the caller's, given a `traceparent` header).
      (req, reply) =>
        deps.tracing.run(
          'POST /v1/builds',
          deps.tracing.continueFrom(req.headers.traceparent as string | undefined),
          async (span, context) => {
            const created = await submitBuild(deps, req, uploads, deps.tracing.traceparent(context));
            span.setAttributes({
              'kiln.build.id': created.build.id,
              'kiln.project.id': req.projectId,
              'kiln.build.outcome': created.outcome,
            });
            reply.header('Location', `/v1/builds/${created.build.id}`);
            return reply.code(CREATE_STATUS[created.outcome]).send(await view(created.build));
          },
          { kind: SpanKind.SERVER },
        ),
    );

    app.get(
      '/v1/builds',
      {
        schema: {
          summary: 'List builds, newest first',
          querystring: Type.Object(
            { status: Type.Optional(BuildStatusSchema), cursor: Type.Optional(cursor), limit: pageLimit },
            { additionalProperties: false },
          ),
          response: { 200: { $ref: 'BuildList#' }, ...buildErrors },
        },
      },
      async (req) => {
        const q = req.query;
        const builds = await deps.builds.listPage(req.projectId, q);
        const page = builds.slice(0, q.limit);
        return {
          items: await Promise.all(page.map(view)),
          nextCursor: builds.length > q.limit ? (page.at(-1)?.id ?? null) : null,
        };
      },
    );

    app.get(
      '/v1/builds/:id',
      {
        schema: {
          summary: 'A build and, once done, its download URL',
          params: idParams,
          response: { 200: { $ref: 'Build#' }, ...buildErrors },
        },
      },
      async (req) => view(await findBuild(req.projectId, req.params.id)),
    );

    app.post(
      '/v1/builds/:id/cancel',
      {
        config: { scope: 'build' },
        schema: {
          summary: 'Cancel a queued or running build',
          params: idParams,
          response: { 202: { $ref: 'Build#' }, ...buildErrors },
        },
      },
      async (req, reply) => {
        const build = await findBuild(req.projectId, req.params.id);
        if (FINAL_STATUSES.has(build.status)) {
          throw new AppError('conflict', `build ${build.id} is already ${build.status}`);
        }
        // A queued build is canceled here; a running one by its worker, which aborts the solve.
        const canceled = await deps.lifecycle.cancel(build.id, 'canceled by request', { whileQueued: true });
        if (canceled.applied) {
          // Canceled already: the job and the notice only spare a worker a look at the row.
          await deps.queue.remove(build.id).catch(() => undefined);
          await deps.redis
            .publish(CHANNEL_CANCEL, build.id)
            .catch((err: Error) => req.log.warn({ err: err.message }, 'cancel notice not published'));
        } else {
          // Its worker learns of it only through Redis: without it, 503 (unavailable) says so.
          await deps.redis.set(cancelRequestKey(build.id), '1', 'EX', CANCEL_REQUEST_TTL_SECONDS);
          await deps.redis.publish(CHANNEL_CANCEL, build.id);
        }
        const current = canceled.applied ? canceled.build : await deps.builds.byId(build.id);
        return reply.code(202).send(await view(current ?? build));
      },
    );

    app.get(
      '/v1/builds/:id/steps',
      {
        schema: {
          summary:
            "The steps of the build's last solve as BuildKit reported them (cached, run, failed), for a timeline",
          params: idParams,
          response: {
            200: {
              type: 'object',
              properties: {
                items: {
                  type: 'array',
                  items: {
                    type: 'object',
                    properties: {
                      name: { type: 'string' },
                      started: { type: ['string', 'null'], format: 'date-time' },
                      completed: { type: ['string', 'null'], format: 'date-time' },
                      cached: { type: 'boolean' },
                      error: { type: ['string', 'null'] },
                    },
                    required: ['name', 'started', 'completed', 'cached', 'error'],
                  },
                },
                omitted: {
                  type: 'integer',
                  description: `Steps past the first ${MAX_LISTED_STEPS}, counted but not listed`,
                },
              },
              required: ['items', 'omitted'],
            },
            ...buildErrors,
          },
        },
      },
      async (req) => {
        const build = await findBuild(req.projectId, req.params.id);
        // None yet (queued, running, or a build that never solved): no steps.
        const object = await getIfStored(deps.storage, stepsKey(build.id));
        if (!object) return { items: [], omitted: 0 };
        const chunks: Buffer[] = [];
        for await (const chunk of object.body) chunks.push(chunk as Buffer);
        const { steps, omitted } = parseBuildSteps(Buffer.concat(chunks).toString('utf8'));
        return { items: steps, omitted };
      },
    );

    app.get(
      '/v1/builds/:id/logs',
      {
        schema: {
          summary: 'Build log: text/plain, or text/event-stream to follow',
          params: idParams,
          response: buildErrors,
        },
      },
      async (req, reply) => {
        const build = await findStored(req.projectId, req.params.id, 'log');
        if ((req.headers.accept ?? '').includes('text/event-stream'))
          return followLogs(deps, build, req, reply);
        return readLogs(deps, build, reply);
      },
    );

    app.get(
      '/v1/builds/:id/artifact',
      {
        schema: {
          summary: 'Redirect (302) to a signed download URL',
          params: idParams,
          response: buildErrors,
        },
      },
      async (req, reply) => {
        const build = await findStored(req.projectId, req.params.id, 'artifact');
        if (build.status !== 'succeeded' || !build.artifactKey) {
          throw new AppError('conflict', `build ${build.id} is ${build.status}: there is no artifact`);
        }
        return reply.redirect(await signed(build.artifactKey, artifactFilename(build)), 302);
      },
    );

    app.get(
      '/v1/builds/:id/provenance',
      {
        schema: {
          summary:
            "Redirect (302) to a signed URL of the build's SLSA provenance (spec provenance=min|max, tar output)",
          params: idParams,
          response: buildErrors,
        },
      },
      async (req, reply) => {
        const build = await findStored(req.projectId, req.params.id, 'provenance');
        const provenance = provenanceOf(build);
        if (!provenance) {
          throw new AppError(
            'conflict',
            `build ${build.id} is ${build.status}: there is no provenance (it needs a succeeded build whose spec has provenance=min|max and a tar output)`,
          );
        }
        return reply.redirect(await signed(provenance.key, 'provenance.json'), 302);
      },
    );
  };
}
