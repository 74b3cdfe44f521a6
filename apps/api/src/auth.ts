import { AppError, hashToken } from '@kiln/core';
import type { FastifyRequest } from 'fastify';
import type { ApiDeps } from './deps.js';

declare module 'fastify' {
  interface FastifyRequest {
    projectId: string;
    /** The API token's id: what rate limits count against. */
    tokenId: string;
  }
}

/**
 * Resolves `Authorization: Bearer <token>` to its project. Tokens are stored as sha256, so
 * the lookup is by hash (an index hit, no comparison of secrets in JS; cached, see TokenCache);
 * revoked tokens fail.
 */
export function authenticator(deps: ApiDeps) {
  return async (req: FastifyRequest): Promise<void> => {
    const header = req.headers.authorization ?? '';
    const match = /^Bearer\s+(\S{8,200})$/i.exec(header);
    if (!match) throw new AppError('unauthorized', 'send "Authorization: Bearer <token>"');
    const token = await deps.tokens.resolve(hashToken(match[1] as string));
    if (!token || token.revokedAt) throw new AppError('unauthorized', 'the token is unknown or revoked');
    req.projectId = token.projectId;
    req.tokenId = token.id;
  };
}
