import pg from 'pg';
import type { Build } from './generated/client.js';

/** What authentication needs of a token row. */
export interface TokenRecord {
  id: string;
  projectId: string;
  revokedAt: Date | null;
}

const TIMESTAMP_OID = 1114;
const INT8_OID = 20;

// Prisma writes `timestamp(3)` columns (no time zone) in UTC; pg's default parser would read
// them as local time. int8 columns are BigInt in Prisma's types, so they are here too.
const rowTypes = {
  getTypeParser(oid: number, format?: 'text' | 'binary') {
    if (oid === TIMESTAMP_OID) return (value: string) => new Date(`${value.replace(' ', 'T')}Z`);
    if (oid === INT8_OID) return (value: string) => BigInt(value);
    return pg.types.getTypeParser(oid, format);
  },
} as pg.CustomTypesConfig;

/**
 * The API's per-request reads in plain SQL on the pool Prisma also uses. Each is one indexed
 * lookup run as a named prepared statement; through Prisma the same reads spent most of a
 * GET's CPU in its query compiler (bench/results/service.md), capping one process near
 * 770 req/s. Rows have exactly Prisma's shapes, so callers cannot tell the paths apart.
 */
export class HotReads {
  constructor(private readonly pool: pg.Pool) {}

  async tokenByHash(tokenHash: string): Promise<TokenRecord | null> {
    const { rows } = await this.pool.query<TokenRecord>({
      name: 'kiln_token_by_hash',
      text: 'SELECT "id", "projectId", "revokedAt" FROM "ApiToken" WHERE "tokenHash" = $1',
      values: [tokenHash],
      types: rowTypes,
    });
    return rows[0] ?? null;
  }

  /** A project's build; another project's is indistinguishable from a missing one (null). */
  async projectBuild(projectId: string, id: string): Promise<Build | null> {
    const { rows } = await this.pool.query<Build>({
      name: 'kiln_project_build',
      text: 'SELECT * FROM "Build" WHERE "id" = $1 AND "projectId" = $2',
      values: [id, projectId],
      types: rowTypes,
    });
    return rows[0] ?? null;
  }
}
