import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import { scopeAllows, TOKEN_SCOPES, type TokenScope } from '@kiln/contract';
import { TokenScopeSchema } from '@kiln/contract/schemas';
import { AppError, issueToken } from '@kiln/core';
import { Type } from 'typebox';
import type { ApiDeps } from '../deps.js';
import { buildErrors, idParams } from '../schemas.js';

const tokenView = {
  type: 'object',
  properties: {
    id: { type: 'string' },
    name: { type: 'string' },
    scope: { type: 'string', enum: [...TOKEN_SCOPES] },
    createdAt: { type: 'string', format: 'date-time' },
    revokedAt: { type: ['string', 'null'], format: 'date-time' },
  },
} as const;

/**
 * The project's API tokens: list, create (the secret is shown once, only its hash is kept) and
 * revoke. A revocation evicts the token from this API's TokenCache before answering and is
 * announced to every replica through Redis, so the token stops working at once everywhere.
 */
export function tokenRoutes(deps: ApiDeps): FastifyPluginAsyncTypebox {
  const { db } = deps;
  const view = (t: {
    id: string;
    name: string;
    scope: TokenScope;
    createdAt: Date;
    revokedAt: Date | null;
  }) => ({
    id: t.id,
    name: t.name,
    scope: t.scope,
    createdAt: t.createdAt.toISOString(),
    revokedAt: t.revokedAt?.toISOString() ?? null,
  });

  return async (app) => {
    app.get(
      '/v1/tokens',
      {
        schema: {
          summary: "The project's API tokens (without their secrets)",
          response: {
            200: { type: 'object', properties: { items: { type: 'array', items: tokenView } } },
            ...buildErrors,
          },
        },
      },
      async (req) => {
        const tokens = await db.apiToken.findMany({
          where: { projectId: req.projectId },
          orderBy: { createdAt: 'asc' },
        });
        return { items: tokens.map(view) };
      },
    );

    app.post(
      '/v1/tokens',
      {
        schema: {
          summary:
            'Create a token for this project (scope: read, build or manage; default and most: your own); its secret is in this answer only',
          body: Type.Object(
            { name: Type.String({ minLength: 1, maxLength: 100 }), scope: Type.Optional(TokenScopeSchema) },
            { additionalProperties: false },
          ),
          response: {
            201: { type: 'object', properties: { ...tokenView.properties, token: { type: 'string' } } },
            ...buildErrors,
          },
        },
      },
      async (req, reply) => {
        const scope = req.body.scope ?? req.tokenScope;
        if (!scopeAllows(req.tokenScope, scope)) {
          throw new AppError('forbidden', `a "${req.tokenScope}" token cannot create a "${scope}" token`);
        }
        const { row, token } = await issueToken(db, { projectId: req.projectId, name: req.body.name, scope });
        return reply.code(201).send({ ...view(row), token });
      },
    );

    app.delete(
      '/v1/tokens/:id',
      { schema: { summary: 'Revoke a token of this project', params: idParams, response: buildErrors } },
      async (req, reply) => {
        const revoked = await db.apiToken.updateMany({
          where: { id: req.params.id, projectId: req.projectId, revokedAt: null },
          data: { revokedAt: new Date() },
        });
        if (revoked.count > 0) await deps.tokens.revoked(req.params.id);
        else {
          const exists = await db.apiToken.findFirst({
            where: { id: req.params.id, projectId: req.projectId },
          });
          if (!exists) throw new AppError('not_found', `no token ${req.params.id}`);
        }
        return reply.code(204).send();
      },
    );
  };
}
