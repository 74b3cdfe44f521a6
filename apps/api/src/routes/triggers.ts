import { randomBytes } from 'node:crypto';
import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import { AppError, checkGitHost, type Prisma, parseBuildSpec, parseGitUrl } from '@kiln/core';
import { Type } from 'typebox';
import { checkSomeBuilderCanServe } from '../builder-capabilities.js';
import type { ApiDeps } from '../deps.js';
import { buildErrors, idParams } from '../schemas.js';
import { MAX_BRANCH_GLOB_LENGTH } from '../webhooks/branch-glob.js';

type Trigger = Prisma.TriggerGetPayload<object>;

const triggerView = {
  type: 'object',
  properties: {
    id: { type: 'string' },
    provider: { type: 'string' },
    repository: { type: 'string' },
    branch: { type: 'string' },
    spec: { type: 'object', additionalProperties: true },
    cloneUrl: { type: ['string', 'null'] },
    /** Where to point the repository's webhook. */
    hookUrl: { type: 'string' },
    createdAt: { type: 'string', format: 'date-time' },
  },
} as const;

const printable = '^[\\x21-\\x7e]+$';
const createBody = Type.Object(
  {
    provider: Type.Enum(['github', 'gitlab'], { type: 'string' }),
    // owner/name on GitHub; group/subgroup/name on GitLab.
    repository: Type.String({ maxLength: 255, pattern: '^[A-Za-z0-9_.-]+(/[A-Za-z0-9_.-]+)+$' }),
    branch: Type.String({ minLength: 1, maxLength: MAX_BRANCH_GLOB_LENGTH, pattern: printable }),
    spec: Type.Optional(Type.Record(Type.String(), Type.Unknown())),
    cloneUrl: Type.Optional(Type.String({ maxLength: 2048 })),
    secret: Type.Optional(Type.String({ minLength: 16, maxLength: 256, pattern: printable })),
  },
  { additionalProperties: false },
);

/**
 * The project's webhook triggers: a push to `repository` on a branch matching `branch` (a glob,
 * see webhooks/branch-glob.ts) builds the pushed commit with `spec`. The secret (GitHub: the HMAC
 * key; GitLab: the token) is Kiln's own unless given, and is in the creation answer only.
 */
export function triggerRoutes(deps: ApiDeps): FastifyPluginAsyncTypebox {
  const { db, config } = deps;
  const view = (t: Trigger) => ({
    id: t.id,
    provider: t.provider,
    repository: t.repository,
    branch: t.branch,
    // Stored from a body whose spec the schema required to be an object.
    spec: t.spec as Prisma.JsonObject,
    cloneUrl: t.cloneUrl,
    hookUrl: `${config.publicUrl}/v1/hooks/${t.provider}`,
    createdAt: t.createdAt.toISOString(),
  });
  const findTrigger = async (projectId: string, id: string) => {
    const trigger = await db.trigger.findFirst({ where: { id, projectId } });
    if (!trigger) throw new AppError('not_found', `no trigger ${id}`);
    return trigger;
  };

  return async (app) => {
    app.post(
      '/v1/triggers',
      {
        schema: {
          summary: 'Create a webhook trigger; its secret is in this answer only',
          body: createBody,
          response: {
            201: { type: 'object', properties: { ...triggerView.properties, secret: { type: 'string' } } },
            ...buildErrors,
          },
        },
      },
      async (req, reply) => {
        const body = req.body;
        const spec = body.spec ?? {};
        // Checked now so that a push never meets a spec or URL that cannot build.
        const parsed = parseBuildSpec(spec);
        if (parsed.secrets) {
          throw new AppError(
            'invalid_spec',
            'a trigger cannot use build secrets: a push carries no secret values',
          );
        }
        // A trigger's spec is stored as given: build secrets would land in PostgreSQL.
        if (spec.secrets !== undefined) {
          throw new AppError('invalid_spec', 'a trigger cannot carry build secrets (they are never stored)');
        }
        if (body.cloneUrl !== undefined) {
          checkGitHost(parseGitUrl(body.cloneUrl, 'cloneUrl'), config.git, 'cloneUrl');
        }
        await checkSomeBuilderCanServe(deps, parsed);
        const secret = body.secret ?? randomBytes(32).toString('hex');
        const trigger = await createWithinCaps(deps, {
          projectId: req.projectId,
          provider: body.provider,
          repository: body.repository.toLowerCase(),
          branch: body.branch,
          spec: spec as Prisma.InputJsonValue,
          cloneUrl: body.cloneUrl ?? null,
          secret,
        });
        return reply.code(201).send({ ...view(trigger), secret });
      },
    );

    app.get(
      '/v1/triggers',
      {
        schema: {
          summary: "The project's webhook triggers (without their secrets)",
          response: {
            200: { type: 'object', properties: { items: { type: 'array', items: triggerView } } },
            ...buildErrors,
          },
        },
      },
      async (req) => {
        const triggers = await db.trigger.findMany({
          where: { projectId: req.projectId },
          orderBy: { createdAt: 'asc' },
        });
        return { items: triggers.map(view) };
      },
    );

    app.get(
      '/v1/triggers/:id',
      {
        schema: {
          summary: 'A webhook trigger (without its secret)',
          params: idParams,
          response: { 200: triggerView, ...buildErrors },
        },
      },
      async (req) => view(await findTrigger(req.projectId, req.params.id)),
    );

    app.delete(
      '/v1/triggers/:id',
      {
        schema: {
          summary: 'Delete a webhook trigger (its builds stay)',
          params: idParams,
          response: buildErrors,
        },
      },
      async (req, reply) => {
        const deleted = await db.trigger.deleteMany({
          where: { id: req.params.id, projectId: req.projectId },
        });
        if (deleted.count === 0) throw new AppError('not_found', `no trigger ${req.params.id}`);
        return reply.code(204).send();
      },
    );
  };
}

/** Advisory-lock classes ("KTRP", "KTRR"): trigger creations of one project, of one repository. */
const PROJECT_LOCK_CLASS = 0x4b545250;
const REPOSITORY_LOCK_CLASS = 0x4b545252;

/**
 * Inserts the trigger unless its project, its project within the repository, or its repository
 * already has as many as the config allows (409 `conflict`, like the cap on event endpoints: the quota is on stored objects, and
 * waiting does not lift it). The repository's count spans every project, because that is how many
 * rows one push delivery is checked against. Creations of the same project, and of the same
 * repository, take turns (locks taken in that order, so never in a cycle); each count is read
 * after its lock is held, so two concurrent creations cannot both take the last place.
 */
async function createWithinCaps(deps: ApiDeps, data: Prisma.TriggerUncheckedCreateInput): Promise<Trigger> {
  const { triggersPerProject, triggersPerRepository, triggersPerProjectRepository } = deps.config.webhooks;
  const repository = `${data.provider}:${data.repository}`;
  return deps.db.$transaction(
    async (tx) => {
      await tx.$executeRaw`SELECT pg_advisory_xact_lock(${PROJECT_LOCK_CLASS}::int4, hashtext(${data.projectId}))`;
      await tx.$executeRaw`SELECT pg_advisory_xact_lock(${REPOSITORY_LOCK_CLASS}::int4, hashtext(${repository}))`;
      if ((await tx.trigger.count({ where: { projectId: data.projectId } })) >= triggersPerProject) {
        throw new AppError(
          'conflict',
          `a project may have at most ${triggersPerProject} triggers; delete one first`,
        );
      }
      const sameRepository = { provider: data.provider, repository: data.repository };
      const own = await tx.trigger.count({ where: { ...sameRepository, projectId: data.projectId } });
      if (own >= triggersPerProjectRepository) {
        throw new AppError(
          'conflict',
          `a project may have at most ${triggersPerProjectRepository} of the ${triggersPerRepository} triggers of one repository (${data.repository}); delete one first`,
        );
      }
      if ((await tx.trigger.count({ where: sameRepository })) >= triggersPerRepository) {
        throw new AppError(
          'conflict',
          `${data.repository} already has the most triggers one repository may have (${triggersPerRepository}); delete one first`,
        );
      }
      return tx.trigger.create({ data });
    },
    // Creations of one repository queue on its lock; the defaults (2 s, 5 s) are too short for a burst.
    { maxWait: 10_000, timeout: 30_000 },
  );
}
