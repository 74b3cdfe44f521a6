import type pg from 'pg';
import type { TokenScope } from './generated/client.js';
import { prismaRowTypes } from './row-types.js';

/** What authentication needs of a token row and its project. */
export interface TokenRecord {
  id: string;
  projectId: string;
  revokedAt: Date | null;
  scope: TokenScope;
  /** The project's: a disabled project's tokens are refused. */
  projectDisabledAt: Date | null;
}

/**
 * Authentication's per-request lookup in plain SQL (a named prepared statement on the pool Prisma
 * also uses): through Prisma's query compiler it cost most of a GET's CPU (bench/results/service.md).
 */
export class TokenQueries {
  constructor(private readonly pool: pg.Pool) {}

  async tokenByHash(tokenHash: string): Promise<TokenRecord | null> {
    const { rows } = await this.pool.query<TokenRecord>({
      name: 'kiln_token_by_hash',
      text: `SELECT t."id", t."projectId", t."revokedAt", t."scope", p."disabledAt" AS "projectDisabledAt"
        FROM "ApiToken" t JOIN "Project" p ON p."id" = t."projectId" WHERE t."tokenHash" = $1`,
      values: [tokenHash],
      types: prismaRowTypes,
    });
    return rows[0] ?? null;
  }
}
