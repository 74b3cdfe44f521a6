import pg from 'pg';
import type { Build } from './generated/client.js';
import { CONTEXT_LOCK_CLASS } from './locks.js';
import { newUlid } from './ulid.js';

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

/** A queued build as the API creates it; every other column takes its default. */
export interface QueuedBuildInput {
  projectId: string;
  spec: unknown;
  requestHash: string;
  idempotencyKey: string | null;
  cacheKey: string | null;
  /** An uploaded context (its object's key is locked while the row goes in, see insertQueuedBuild). */
  contextDigest?: string | null;
  contextSize?: bigint | null;
  contextKey?: string | null;
  /** api (default), github or gitlab. */
  source?: string;
  gitUrl?: string | null;
  gitRef?: string | null;
  gitCommit?: string | null;
  triggerId?: string | null;
}

/** The columns insertQueuedBuild sets, with the casts their parameters need (see below). */
const INSERT_COLUMNS: ReadonlyArray<readonly [column: string, cast: string]> = [
  ['id', ''],
  ['projectId', ''],
  ['spec', '::jsonb'],
  ['requestHash', ''],
  ['idempotencyKey', ''],
  ['cacheKey', ''],
  ['contextDigest', ''],
  ['contextSize', '::bigint'],
  ['contextKey', ''],
  ['source', ''],
  ['gitUrl', ''],
  ['gitRef', ''],
  ['gitCommit', ''],
  ['triggerId', ''],
  ['createdAt', '::timestamp(3)'],
];
const INSERT_COLUMN_LIST = INSERT_COLUMNS.map(([c]) => `"${c}"`).join(', ');
// In INSERT ... SELECT, PostgreSQL types parameters by the SELECT list, not by the columns.
const insertParams = (first: number) =>
  INSERT_COLUMNS.map(([, cast], i) => `$${first + i}${cast}`).join(', ');

/**
 * The API's per-request queries in plain SQL on the pool Prisma also uses. Each is one indexed
 * lookup (or one insert) run as a named prepared statement; through Prisma the same reads spent
 * most of a GET's CPU in its query compiler (bench/results/service.md), capping one process near
 * 770 req/s, and its insert took 45% of a POST's busy time. Rows have exactly Prisma's shapes,
 * so callers cannot tell the paths apart.
 */
export class HotQueries {
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

  /**
   * Inserts a queued build in one statement (one round trip, its own transaction). With a
   * context, the statement first takes the context object's shared advisory lock
   * (lockContextObject's, held until the insert commits), so retention, which deletes a context
   * under the exclusive lock, either ran before (the caller then checks the object) or sees this row.
   * A duplicate idempotency key fails with PostgreSQL's unique_violation (see isUniqueViolation).
   */
  async insertQueuedBuild(input: QueuedBuildInput): Promise<Build> {
    const columns = [
      newUlid(),
      input.projectId,
      JSON.stringify(input.spec),
      input.requestHash,
      input.idempotencyKey,
      input.cacheKey,
      input.contextDigest ?? null,
      input.contextSize === undefined || input.contextSize === null ? null : input.contextSize.toString(),
      input.contextKey ?? null,
      input.source ?? 'api',
      input.gitUrl ?? null,
      input.gitRef ?? null,
      input.gitCommit ?? null,
      input.triggerId ?? null,
      // The column has no time zone and holds UTC (Prisma's convention).
      new Date().toISOString(),
    ];
    const { rows } = await this.pool.query<Build>(
      input.contextKey
        ? {
            name: 'kiln_insert_build_locked',
            text: `WITH lock AS (SELECT pg_advisory_xact_lock_shared($1::int4, hashtext($2)))
              INSERT INTO "Build" (${INSERT_COLUMN_LIST}, "status")
              SELECT ${insertParams(3)}, 'queued'::"BuildStatus" FROM lock RETURNING *`,
            values: [CONTEXT_LOCK_CLASS, input.contextKey, ...columns],
            types: rowTypes,
          }
        : {
            name: 'kiln_insert_build',
            text: `INSERT INTO "Build" (${INSERT_COLUMN_LIST}, "status")
              VALUES (${insertParams(1)}, 'queued') RETURNING *`,
            values: columns,
            types: rowTypes,
          },
    );
    return rows[0] as Build;
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
