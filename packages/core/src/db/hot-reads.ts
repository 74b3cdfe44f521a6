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

  /**
   * The newest succeeded build of a project with this result-cache key and platform that finished
   * at or after `since` and still has its artifact: what the result cache answers from. One
   * index range (see the Build index on projectId, cacheKey, status, platform, finishedAt).
   */
  async resultCacheSource(
    projectId: string,
    cacheKey: string,
    platform: string,
    since: Date,
  ): Promise<Build | null> {
    const { rows } = await this.pool.query<Build>({
      name: 'kiln_result_cache_source',
      text: `SELECT * FROM "Build"
        WHERE "projectId" = $1 AND "cacheKey" = $2 AND "status" = 'succeeded' AND "platform" = $3
          AND "finishedAt" >= $4 AND "artifactKey" IS NOT NULL
        ORDER BY "finishedAt" DESC LIMIT 1`,
      // The column has no time zone and holds UTC; pg would send the Date in local time.
      values: [projectId, cacheKey, platform, since.toISOString()],
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
