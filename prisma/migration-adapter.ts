/**
 * The driver adapter Prisma's CLI uses for its JavaScript schema engine (prisma.config.ts,
 * `engine: 'js'`), i.e. for `prisma migrate dev|diff|status|reset` and `db pull` against a
 * live database. Only the CLI loads this file; the application has its own client in
 * packages/core/src/db.
 *
 * Three workarounds for @prisma/adapter-pg 6.19:
 * - Introspection reads catalog columns of type `name` (oid 19) and `"char"` (oid 18), which
 *   the adapter cannot map and rejects as UnsupportedNativeDataType (prisma/orm#27403, fixed
 *   in later releases by prisma/orm#28470). A pg.Client subclass reports those columns (and
 *   `name[]`) as text; their values already arrive as strings, so nothing else changes.
 * - For a shadow database the adapter spreads its pg config and overrides `database`; a
 *   `connectionString` would win over that field, so the URL is passed as separate fields.
 * - Its shadow database clean-up is in the wrong order (see MigrationPg).
 */
import { randomUUID } from 'node:crypto';
import { PrismaPg } from '@prisma/adapter-pg';
import pg from 'pg';

const OID = { char: 18, name: 19, text: 25, nameArray: 1003, textArray: 1009 } as const;

type Field = { dataTypeID: number };
type Result = { fields?: Field[] };

function reportCatalogTypesAsText(result: unknown): unknown {
  // A multi-statement script yields one result per statement.
  for (const r of (Array.isArray(result) ? result : [result]) as (Result | undefined)[]) {
    for (const field of r?.fields ?? []) {
      if (field.dataTypeID === OID.name || field.dataTypeID === OID.char) field.dataTypeID = OID.text;
      else if (field.dataTypeID === OID.nameArray) field.dataTypeID = OID.textArray;
    }
  }
  return result;
}

type QueryFn = (...args: unknown[]) => unknown;

/** Covers both ways pg is queried: promises (pool clients) and callbacks (pg.Pool#query). */
class CatalogAsTextClient extends pg.Client {
  constructor(config?: pg.ClientConfig) {
    super(config);
    const query = (super.query as QueryFn).bind(this);
    this.query = ((...args: unknown[]) => {
      const last = args.length - 1;
      const callback = args[last];
      if (typeof callback === 'function') {
        args[last] = (err: unknown, res: unknown) =>
          (callback as QueryFn)(err, err ? res : reportCatalogTypesAsText(res));
        return query(...args);
      }
      const ret = query(...args);
      return ret instanceof Promise ? ret.then(reportCatalogTypesAsText) : ret;
    }) as pg.Client['query'];
  }
}

/** Connection fields from a postgresql:// URL (see the shadow database note above). */
export function pgConfigFromUrl(databaseUrl: string): pg.PoolConfig {
  const url = new URL(databaseUrl);
  if (url.protocol !== 'postgresql:' && url.protocol !== 'postgres:') {
    throw new Error(`DATABASE_URL must be a postgresql:// URL, got ${url.protocol}//…`);
  }
  const sslmode = url.searchParams.get('sslmode');
  return {
    host: decodeURIComponent(url.hostname) || 'localhost',
    port: url.port ? Number(url.port) : 5432,
    user: decodeURIComponent(url.username) || undefined,
    password: url.password ? decodeURIComponent(url.password) : undefined,
    database: decodeURIComponent(url.pathname.replace(/^\//, '')) || undefined,
    ssl: sslmode && sslmode !== 'disable' ? { rejectUnauthorized: sslmode === 'verify-full' } : undefined,
  };
}

/**
 * adapter-pg 6.19's own connectToShadowDb drops the shadow database before closing the pool
 * connected to it, which PostgreSQL refuses ("is being accessed by other users"), failing
 * `migrate dev`. This one closes first, and drops WITH (FORCE) in case a connection lingers.
 */
class MigrationPg extends PrismaPg {
  constructor(private readonly pgConfig: pg.PoolConfig) {
    super(pgConfig);
  }

  override async connectToShadowDb(): ReturnType<PrismaPg['connectToShadowDb']> {
    const main = await this.connect();
    const database = `prisma_migrate_shadow_db_${randomUUID()}`;
    await main.executeScript(`CREATE DATABASE "${database}"`);
    const shadow = await new PrismaPg({ ...this.pgConfig, database }).connect();
    const disposeShadow = shadow.dispose.bind(shadow);
    shadow.dispose = async () => {
      try {
        await disposeShadow();
        await main.executeScript(`DROP DATABASE IF EXISTS "${database}" WITH (FORCE)`);
      } finally {
        await main.dispose();
      }
    };
    return shadow;
  }
}

export function createMigrationAdapter(databaseUrl: string): PrismaPg {
  return new MigrationPg({
    ...pgConfigFromUrl(databaseUrl),
    // The CLI does not always dispose the adapter; idle pooled connections would otherwise
    // keep it alive for pg's idle timeout (10 s) after the command is done.
    allowExitOnIdle: true,
    Client: CatalogAsTextClient as unknown as pg.PoolConfig['Client'],
  });
}
