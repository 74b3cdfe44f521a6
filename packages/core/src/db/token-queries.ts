import type pg from 'pg';
import { prismaRowTypes } from './row-types.js';

/** What authentication needs of a token row. */
export interface TokenRecord {
  id: string;
  projectId: string;
  revokedAt: Date | null;
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
      text: 'SELECT "id", "projectId", "revokedAt" FROM "ApiToken" WHERE "tokenHash" = $1',
      values: [tokenHash],
      types: prismaRowTypes,
    });
    return rows[0] ?? null;
  }
}
