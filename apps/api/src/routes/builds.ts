import path from 'node:path';
import type { Readable } from 'node:stream';
import {
  AppError,
  BUILD_STATUSES,
  type BuildSecrets,
  type BuildSpec,
  type BuildSpecInput,
  CHANNEL_CANCEL,
  FINAL_STATUSES,
  parseBuildSecrets,
  parseBuildSpec,
  SPEC_FIELDS,
} from '@kiln/core';
import type { FastifyInstance, FastifyRequest } from 'fastify';
import { buildView } from '../build-view.js';
import { checkIdempotencyKey, createBuild } from '../create-build.js';
import type { ApiDeps } from '../deps.js';
import { parseGitBuildRequest } from '../git-request.js';
import { followLogs, readLogs } from '../logs.js';
import { buildErrors, idParams } from '../schemas.js';
import { type ReceivedContext, receiveContext } from '../upload.js';

export const RAW_CONTEXT_TYPES = [
  'application/x-tar',
  'application/tar',
  'application/gzip',
  'application/x-gzip',
  'application/octet-stream',
];

/** A queued build is accepted (202); one answered from the result cache is created done (201). */
const CREATE_STATUS = { queued: 202, cached: 201, existing: 200 } as const;

/** docker-style repeatable `build-arg=K=V` / `label=K=V` query parameters become the spec's maps. */
function specFromQuery(query: Record<string, unknown>): BuildSpecInput {
  const spec: Record<string, unknown> = {};
  const list = (v: unknown) => (Array.isArray(v) ? v : v === undefined ? [] : [v]);
  for (const [k, v] of Object.entries(query)) {
    if (k === 'secrets' || k === 'secret') {
      throw new AppError(
        'invalid_spec',
        'secrets are not accepted in the query string (URLs end up in logs): send them in the JSON "spec" part of a multipart request',
      );
    }
    if (k === 'build-arg') spec.buildArgs = list(v);
    else if (k === 'label') spec.labels = list(v);
    else if (SPEC_FIELDS.includes(k)) {
      if (Array.isArray(v)) throw new AppError('invalid_spec', `${k} is given more than once`);
      spec[k] = v;
    } else throw new AppError('invalid_spec', `unknown parameter "${k.slice(0, 100)}"`);
  }
  return spec as BuildSpecInput;
}

export function buildRoutes(deps: ApiDeps) {
  const { storage, config } = deps;
  const view = (b: Parameters<typeof buildView>[0]) =>
    buildView(b, storage, config.urlTtlSeconds, config.publicUrl);
  const uploadOptions = (dockerfilePath: string) => ({
    storage,
    tmpDir: path.join(config.dataDir, 'tmp'),
    limits: {
      maxUncompressedBytes: config.limits.maxContextBytes,
      maxCompressedBytes: config.limits.maxContextBytes,
      maxEntries: config.limits.maxContextEntries,
    },
    dockerfilePath,
  });

  /** The spec and the stored context of a POST (raw body, or multipart with fields before the context part). */
  const receiveUpload = async (
    req: FastifyRequest,
  ): Promise<{ spec: BuildSpec; secrets: BuildSecrets; context: ReceivedContext }> => {
    // Node's requestTimeout stops counting once a request reaches its handler, so a drip-fed
    // upload needs its own deadline; the socket idle timeout (connectionTimeout) cuts a stalled one.
    const seconds = config.requestTimeoutSeconds;
    const deadline = setTimeout(
      () => req.raw.destroy(new AppError('invalid_request', `the upload took longer than ${seconds} s`)),
      seconds * 1000,
    );
    try {
      return await readUpload(req);
    } finally {
      clearTimeout(deadline);
    }
  };
  const readUpload = async (
    req: FastifyRequest,
  ): Promise<{ spec: BuildSpec; secrets: BuildSecrets; context: ReceivedContext }> => {
    if (!req.isMultipart()) {
      if (!isStream(req.body)) {
        throw new AppError(
          'unsupported_media_type',
          `send the context as ${RAW_CONTEXT_TYPES.slice(0, 3).join(', ')} or multipart/form-data, or name a git repository in JSON`,
        );
      }
      const spec = parseBuildSpec(specFromQuery(req.query as Record<string, unknown>));
      return { spec, secrets: {}, context: await receiveContext(req.body, uploadOptions(spec.file)) };
    }
    // No prototype: a "__proto__" key in a JSON spec stays a key (and is then rejected as unknown).
    const fields: Record<string, unknown> = Object.create(null);
    let stored: { spec: BuildSpec; secrets: BuildSecrets; context: ReceivedContext } | undefined;
    try {
      for await (const part of req.parts()) {
        if (part.type === 'file') {
          if (part.fieldname !== 'context' || stored) {
            part.file.resume();
            throw new AppError(
              'invalid_request',
              `unexpected file part "${part.fieldname}": send one part named "context"`,
            );
          }
          const input: BuildSpecInput = { ...fields, ...specFromQuery(req.query as Record<string, unknown>) };
          const spec = parseBuildSpec(input);
          const secrets = parseBuildSecrets(input.secrets);
          stored = { spec, secrets, context: await receiveContext(part.file, uploadOptions(spec.file)) };
        } else {
          if (stored)
            throw new AppError(
              'invalid_request',
              `field "${part.fieldname}" must come before the context part`,
            );
          if (part.valueTruncated) {
            const code = part.fieldname === 'spec' ? 'invalid_spec' : 'invalid_request';
            throw new AppError(code, `the "${part.fieldname}" field is larger than 1 MiB`);
          }
          if (part.fieldname === 'spec') {
            // A part sent as application/json arrives parsed already.
            const spec = typeof part.value === 'string' ? parseSpecJson(part.value) : part.value;
            if (typeof spec !== 'object' || spec === null || Array.isArray(spec)) {
              throw new AppError('invalid_spec', 'the "spec" field must be a JSON object');
            }
            for (const [k, v] of Object.entries(spec)) fields[k] = v;
          } else fields[part.fieldname] = part.value;
        }
      }
    } catch (err) {
      await stored?.context.dispose();
      throw err;
    }
    if (!stored) throw new AppError('invalid_context', 'no "context" file part in the form');
    return stored;
  };

  const findBuild = async (req: FastifyRequest<{ Params: { id: string } }>) => {
    const build = await deps.builds.projectBuild(req.projectId, req.params.id);
    // Another project's build is indistinguishable from a missing one.
    if (!build) throw new AppError('not_found', `no build ${req.params.id}`);
    return build;
  };

  return async (app: FastifyInstance) => {
    for (const type of RAW_CONTEXT_TYPES) {
      app.addContentTypeParser(type, (_req, payload, done) => done(null, payload));
    }

    app.post(
      '/v1/builds',
      {
        schema: {
          summary:
            'Start a build from an uploaded context (tar, gzip or multipart) or a git repository (JSON {git, ...spec}) and an export spec',
          querystring: { type: 'object', additionalProperties: true },
          headers: { type: 'object', properties: { 'idempotency-key': { type: 'string' } } },
          // 202 queued; 201 answered from the result cache (already succeeded); 200 an idempotent retry.
          response: {
            200: { $ref: 'Build#' },
            201: { $ref: 'Build#' },
            202: { $ref: 'Build#' },
            ...buildErrors,
          },
        },
      },
      async (req, reply) => {
        const idempotencyKey = checkIdempotencyKey(req.headers['idempotency-key'] as string | undefined);
        const answer = async (created: Awaited<ReturnType<typeof createBuild>>) => {
          reply.header('Location', `/v1/builds/${created.build.id}`);
          return reply.code(CREATE_STATUS[created.outcome]).send(await view(created.build));
        };
        if (isJsonBody(req)) {
          const { spec, git } = parseGitBuildRequest(req.body);
          const source = { kind: 'git', git, origin: 'api' } as const;
          const secrets = parseBuildSecrets((req.body as BuildSpecInput).secrets);
          return answer(await createBuild(deps, req.projectId, spec, source, idempotencyKey, secrets));
        }
        const { spec, secrets, context } = await receiveUpload(req);
        try {
          return await answer(
            await createBuild(
              deps,
              req.projectId,
              spec,
              { kind: 'upload', context },
              idempotencyKey,
              secrets,
            ),
          );
        } finally {
          await context.dispose();
        }
      },
    );

    app.get(
      '/v1/builds',
      {
        schema: {
          summary: 'List builds, newest first',
          querystring: {
            type: 'object',
            properties: {
              status: { type: 'string', enum: [...BUILD_STATUSES] },
              cursor: { type: 'string', pattern: '^[0-9A-Za-z]{1,64}$' },
              limit: { type: 'integer', minimum: 1, maximum: 100, default: 20 },
            },
            additionalProperties: false,
          },
          response: { 200: { $ref: 'BuildList#' }, ...buildErrors },
        },
      },
      async (req) => {
        const q = req.query as { status?: (typeof BUILD_STATUSES)[number]; cursor?: string; limit: number };
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
      async (req) => view(await findBuild(req as FastifyRequest<{ Params: { id: string } }>)),
    );

    app.post(
      '/v1/builds/:id/cancel',
      {
        schema: {
          summary: 'Cancel a queued or running build',
          params: idParams,
          response: { 202: { $ref: 'Build#' }, ...buildErrors },
        },
      },
      async (req, reply) => {
        const build = await findBuild(req as FastifyRequest<{ Params: { id: string } }>);
        if (FINAL_STATUSES.has(build.status)) {
          throw new AppError('conflict', `build ${build.id} is already ${build.status}`);
        }
        // A queued build is canceled here; a running one by its worker, which aborts the solve.
        const canceled = await deps.lifecycle.cancel(build.id, 'canceled by request', { whileQueued: true });
        if (canceled.applied) await deps.queue.remove(build.id).catch(() => undefined);
        await deps.redis.publish(CHANNEL_CANCEL, build.id);
        const current = canceled.applied ? canceled.build : await deps.builds.byId(build.id);
        return reply.code(202).send(await view(current ?? build));
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
        const build = await findBuild(req as FastifyRequest<{ Params: { id: string } }>);
        if (build.status === 'expired')
          throw new AppError('gone', `the log of build ${build.id} has expired`);
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
        const build = await findBuild(req as FastifyRequest<{ Params: { id: string } }>);
        if (build.status === 'expired')
          throw new AppError('gone', `the artifact of build ${build.id} has expired`);
        if (build.status !== 'succeeded' || !build.artifactKey) {
          throw new AppError('conflict', `build ${build.id} is ${build.status}: there is no artifact`);
        }
        const filename = (build.spec as { output?: { dest?: string } }).output?.dest ?? 'output.tar';
        return reply.redirect(
          await storage.signedUrl(build.artifactKey, { expiresInSeconds: config.urlTtlSeconds, filename }),
          302,
        );
      },
    );
  };
}

/** Fastify's JSON parser has run: the body is a remote-context request, not an upload. */
function isJsonBody(req: FastifyRequest): boolean {
  return (req.headers['content-type'] ?? '').split(';')[0]?.trim().toLowerCase() === 'application/json';
}

function isStream(body: unknown): body is Readable {
  return typeof body === 'object' && body !== null && typeof (body as Readable).pipe === 'function';
}

function parseSpecJson(text: string): Record<string, unknown> {
  try {
    const v = JSON.parse(text) as unknown;
    if (typeof v === 'object' && v !== null && !Array.isArray(v)) return v as Record<string, unknown>;
  } catch {
    // reported below
  }
  throw new AppError('invalid_spec', 'the "spec" field must be a JSON object');
}
