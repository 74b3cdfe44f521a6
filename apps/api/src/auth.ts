import { createHash, timingSafeEqual } from 'node:crypto';
import { scopeAllows, type TokenScope } from '@kiln/contract';
import { AppError, hashToken } from '@kiln/core';
import type { FastifyRequest } from 'fastify';
import type { ApiDeps } from './deps.js';

declare module 'fastify' {
  interface FastifyRequest {
    projectId: string;
    /** The API token's id. */
    tokenId: string;
    tokenScope: TokenScope;
  }
  interface FastifyContextConfig {
    /** The token scope a route needs; without it, `read` for GET and HEAD, `manage` for the rest. */
    scope?: TokenScope;
  }
}

const BEARER = /^Bearer\s+(\S{8,200})$/i;

/** What administers the project (its tokens, triggers, event endpoints): `manage`, reads included. */
const MANAGE_PREFIXES = ['/v1/tokens', '/v1/triggers', '/v1/endpoints', '/v1/registry-credentials'];

/** The scope a route needs: declared, by prefix, or by method (a write that forgets to say is `manage`-only). */
function neededScope(req: FastifyRequest): TokenScope {
  const declared = req.routeOptions.config.scope;
  if (declared) return declared;
  const url = req.routeOptions.url ?? '';
  if (MANAGE_PREFIXES.some((p) => url === p || url.startsWith(`${p}/`))) return 'manage';
  return req.method === 'GET' || req.method === 'HEAD' ? 'read' : 'manage';
}

/**
 * Resolves `Authorization: Bearer <token>` to its project and scope. Tokens are stored as
 * sha256, so the lookup is by hash (an index hit, no comparison of secrets in JS; cached, see
 * TokenCache); revoked tokens, and those of a disabled project, fail.
 */
export function authenticator(deps: ApiDeps) {
  return async (req: FastifyRequest): Promise<void> => {
    const match = BEARER.exec(req.headers.authorization ?? '');
    if (!match) throw new AppError('unauthorized', 'send "Authorization: Bearer <token>"');
    const token = await deps.tokens.resolve(hashToken(match[1] as string));
    if (!token || token.revokedAt) throw new AppError('unauthorized', 'the token is unknown or revoked');
    if (token.projectDisabledAt) throw new AppError('forbidden', "the token's project is disabled");
    const needed = neededScope(req);
    if (!scopeAllows(token.scope, needed)) {
      throw new AppError(
        'forbidden',
        `this needs a token of scope "${needed}"; this one is "${token.scope}"`,
      );
    }
    req.projectId = token.projectId;
    req.tokenId = token.id;
    req.tokenScope = token.scope;
  };
}

/**
 * A route for one party outside any project, authenticated by a token from the environment,
 * compared in constant time: the operator's (KILN_OPERATOR_TOKEN: projects, quotas) and the
 * metrics scraper's (KILN_METRICS_TOKEN). Without one configured the routes do not exist (404),
 * so nothing can guess at them.
 */
export function staticTokenAuthenticator(token: string | undefined, variable: string) {
  const expected = token ? digest(token) : undefined;
  return async (req: FastifyRequest): Promise<void> => {
    if (!expected) throw new AppError('not_found', `no route ${req.method} ${req.url.split('?')[0]}`);
    const match = BEARER.exec(req.headers.authorization ?? '');
    if (!match || !timingSafeEqual(digest(match[1] as string), expected)) {
      throw new AppError('unauthorized', `send "Authorization: Bearer <${variable}>"`);
    }
  };
}

const digest = (value: string) => createHash('sha256').update(value).digest();
