import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import { TokenScopeSchema } from '@kiln/contract/schemas';
import {
  AppError,
  effectiveQuotas,
  issueToken,
  isUniqueViolation,
  type ProjectQuotaRow,
  type ProjectQuotas,
} from '@kiln/core';
import { Type } from 'typebox';
import { staticTokenAuthenticator } from '../auth.js';
import type { ApiDeps } from '../deps.js';
import { buildErrors } from '../schemas.js';

const NAME = Type.String({ minLength: 1, maxLength: 100, pattern: '^[A-Za-z0-9][A-Za-z0-9._-]*$' });
/**
 * A quota value or null, as one `type` list: in an anyOf, Fastify's type coercion would turn
 * null into 0 in the integer branch (a quota of nothing instead of the default).
 */
const quotaValue = (maximum: number, minimum = 0) =>
  Type.Unsafe<number | null>({ type: ['integer', 'null'], minimum, maximum });
/** A project's own quota values; null (or absent at creation) takes the configured default. */
const QUOTAS = Type.Object(
  {
    queuedBuilds: Type.Optional(quotaValue(10_000_000)),
    runningBuilds: Type.Optional(quotaValue(100_000)),
    artifactBytes: Type.Optional(quotaValue(2 ** 50)),
    // The log budget has the floor KILN_MAX_LOG_BYTES has: below it not even the marker fits.
    logBytes: Type.Optional(quotaValue(2 ** 30, 64 * 1024)),
    storedBytes: Type.Optional(quotaValue(2 ** 53 - 1)),
  },
  { additionalProperties: false },
);
const PROJECT_REF = Type.Object({ project: Type.String({ minLength: 1, maxLength: 100 }) });

type ProjectRow = ProjectQuotaRow & {
  id: string;
  name: string;
  createdAt: Date;
  disabledAt: Date | null;
  storedBytes: bigint;
};

/**
 * The operator's routes, outside every project, behind KILN_OPERATOR_TOKEN: create, list and
 * disable projects, set their quotas, and give a project its first token. A project is named by
 * its id or its name.
 */
export function adminRoutes(deps: ApiDeps): FastifyPluginAsyncTypebox {
  const { db } = deps;
  const view = (p: ProjectRow) => ({
    id: p.id,
    name: p.name,
    createdAt: p.createdAt.toISOString(),
    disabledAt: p.disabledAt?.toISOString() ?? null,
    quotas: {
      queuedBuilds: p.maxQueuedBuilds,
      runningBuilds: p.maxRunningBuilds,
      artifactBytes: p.maxArtifactBytes === null ? null : Number(p.maxArtifactBytes),
      logBytes: p.maxLogBytes === null ? null : Number(p.maxLogBytes),
      storedBytes: p.maxStoredBytes === null ? null : Number(p.maxStoredBytes),
    },
    effectiveQuotas: effectiveQuotas(deps.config.quotas, p),
    /** What the project keeps stored now, each shared object counted once at full size. */
    usage: { storedBytes: Number(p.storedBytes) },
  });
  const find = async (ref: string): Promise<ProjectRow> => {
    const project = await db.project.findFirst({ where: { OR: [{ id: ref }, { name: ref }] } });
    if (!project) throw new AppError('not_found', `no project ${ref}`);
    return project;
  };
  const quotaColumns = (q: Partial<Record<keyof ProjectQuotas, number | null>> = {}) => ({
    ...(q.queuedBuilds !== undefined ? { maxQueuedBuilds: q.queuedBuilds } : {}),
    ...(q.runningBuilds !== undefined ? { maxRunningBuilds: q.runningBuilds } : {}),
    ...(q.artifactBytes !== undefined
      ? { maxArtifactBytes: q.artifactBytes === null ? null : BigInt(q.artifactBytes) }
      : {}),
    ...(q.logBytes !== undefined ? { maxLogBytes: q.logBytes === null ? null : BigInt(q.logBytes) } : {}),
    ...(q.storedBytes !== undefined
      ? { maxStoredBytes: q.storedBytes === null ? null : BigInt(q.storedBytes) }
      : {}),
  });

  return async (app) => {
    app.addHook('onRequest', staticTokenAuthenticator(deps.config.operatorToken, 'KILN_OPERATOR_TOKEN'));

    app.get(
      '/v1/admin/projects',
      { schema: { summary: 'Every project, with its quotas (operator)', hide: true, response: buildErrors } },
      async () => ({ items: (await db.project.findMany({ orderBy: { createdAt: 'asc' } })).map(view) }),
    );

    app.post(
      '/v1/admin/projects',
      {
        schema: {
          summary: 'Create a project (operator)',
          hide: true,
          body: Type.Object({ name: NAME, quotas: Type.Optional(QUOTAS) }, { additionalProperties: false }),
          response: buildErrors,
        },
      },
      async (req, reply) => {
        try {
          const project = await db.project.create({
            data: { name: req.body.name, ...quotaColumns(req.body.quotas) },
          });
          return reply.code(201).send(view(project));
        } catch (err) {
          if (isUniqueViolation(err)) throw new AppError('conflict', `a project ${req.body.name} exists`);
          throw err;
        }
      },
    );

    app.get(
      '/v1/admin/projects/:project',
      {
        schema: { summary: 'One project (operator)', hide: true, params: PROJECT_REF, response: buildErrors },
      },
      async (req) => view(await find(req.params.project)),
    );

    app.patch(
      '/v1/admin/projects/:project',
      {
        schema: {
          summary: 'Disable or enable a project, or change its quotas (operator)',
          hide: true,
          params: PROJECT_REF,
          body: Type.Object(
            { disabled: Type.Optional(Type.Boolean()), quotas: Type.Optional(QUOTAS) },
            { additionalProperties: false },
          ),
          response: buildErrors,
        },
      },
      async (req) => {
        const project = await find(req.params.project);
        const { disabled, quotas } = req.body;
        const updated = await db.project.update({
          where: { id: project.id },
          data: {
            ...quotaColumns(quotas),
            ...(disabled === undefined
              ? {}
              : { disabledAt: disabled ? (project.disabledAt ?? new Date()) : null }),
          },
        });
        if (disabled !== undefined) {
          // Cached tokens of the project follow at once, on every replica (either way).
          const tokens = await db.apiToken.findMany({
            where: { projectId: project.id },
            select: { id: true },
          });
          for (const t of tokens) await deps.tokens.revoked(t.id);
        }
        return view(updated);
      },
    );

    app.post(
      '/v1/admin/projects/:project/tokens',
      {
        schema: {
          summary: "Create a token of a project (operator): the project's first, or a replacement",
          hide: true,
          params: PROJECT_REF,
          body: Type.Object(
            { name: Type.String({ minLength: 1, maxLength: 100 }), scope: Type.Optional(TokenScopeSchema) },
            { additionalProperties: false },
          ),
          response: buildErrors,
        },
      },
      async (req, reply) => {
        const project = await find(req.params.project);
        const { row, token } = await issueToken(db, {
          projectId: project.id,
          name: req.body.name,
          scope: req.body.scope ?? 'manage',
        });
        return reply
          .code(201)
          .send({ id: row.id, name: row.name, scope: row.scope, projectId: project.id, token });
      },
    );
  };
}
