import { createHash, timingSafeEqual } from 'node:crypto';
import { scopeAllows, type TokenScope } from '@kiln/contract';
import { AppError, hashToken } from '@kiln/core';
import type { FastifyRequest } from 'fastify';
import type { Redis } from 'ioredis';
import { clientAddressKey } from './client-address.js';
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
  const failures = new AuthFailures(deps.redis, deps.config.authFailuresPerMinute);
  return async (req: FastifyRequest): Promise<void> => {
    const match = BEARER.exec(req.headers.authorization ?? '');
    if (!match) throw new AppError('unauthorized', 'send "Authorization: Bearer <token>"');
    const hash = hashToken(match[1] as string);
    let token = deps.tokens.cached(hash) ?? null;
    if (!token) {
      await failures.check(clientAddressKey(req.ip));
      token = await deps.tokens.resolve(hash);
    }
    if (!token || token.revokedAt) {
      await failures.record(clientAddressKey(req.ip));
      throw new AppError('unauthorized', 'the token is unknown or revoked');
    }
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
 * Requests with an unknown or revoked token, per address and minute, in Redis (so across API
 * replicas). Past the limit, a request whose token this API does not hold in its cache is refused
 * before PostgreSQL is asked: guessing tokens costs the database nothing more, while tokens in use
 * (cached) go on working from that address. Behind a proxy every client shares its address.
 * Redis down: nothing is counted or refused.
 */
class AuthFailures {
  constructor(
    private readonly redis: Redis,
    private readonly perMinute: number,
  ) {}

  private key(ip: string): string {
    return `kiln:auth-failures:${ip}`;
  }

  async check(ip: string): Promise<void> {
    if (this.perMinute === 0) return;
    const count = await this.redis.get(this.key(ip)).catch(() => null);
    if (Number(count ?? 0) < this.perMinute) return;
    // Only for a refusal: the window's end, for the message.
    const ttl = await this.redis.pttl(this.key(ip)).catch(() => -1);
    throw new AppError(
      'rate_limited',
      `more than ${this.perMinute} requests a minute with unknown tokens from this address; retry in ${Math.max(1, Math.ceil(ttl / 1000))} s`,
    );
  }

  async record(ip: string): Promise<void> {
    if (this.perMinute === 0) return;
    // The window starts with the first failure; INCR keeps the expiry SET gave it.
    await this.redis
      .multi()
      .set(this.key(ip), '0', 'PX', 60_000, 'NX')
      .incr(this.key(ip))
      .exec()
      .catch(() => undefined);
  }
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
