import { createHash, randomUUID } from 'node:crypto';
import type { Dirent } from 'node:fs';
import { readdir, readFile } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import pg from 'pg';

/**
 * Applies the committed SQL migrations (prisma/migrations/<name>/migration.sql) at start-up,
 * without the Prisma CLI.
 *
 * Bookkeeping uses Prisma's own `_prisma_migrations` table, same columns and sha256 checksums,
 * so the CLI (`prisma migrate status|diff|deploy`) and this function agree on what is applied
 * and can be used on the same database. Prisma semantics kept: a row with `rolled_back_at` set
 * does not count as applied; a row that started but never finished (a failed `migrate
 * deploy`) stops everything until resolved.
 *
 * Concurrency and atomicity: everything happens in one transaction holding the transaction-level
 * advisory lock on the key the Prisma CLI also uses (72707369). Two processes starting together
 * queue on the lock; the second finds the work done. If any migration fails, all of this run's
 * migrations roll back and nothing is recorded, so the next start retries from a clean state.
 * (PostgreSQL DDL is transactional. A migration that cannot run in a transaction, such as
 * CREATE INDEX CONCURRENTLY, is therefore not supported here.)
 */

/** Prisma Migrate's advisory lock key: the app and the CLI exclude each other. */
const MIGRATE_LOCK_KEY = 72707369;

/** Satisfied by pino loggers and by `console`. */
export interface MigrationLogger {
  info(msg: string): void;
  warn(msg: string): void;
}

export interface MigrateOptions {
  /** Directory holding `<name>/migration.sql`; defaults to the repository's prisma/migrations. */
  migrationsDir?: string;
}

export interface MigrateResult {
  /** Names of the migrations applied by this call, in order (empty when up to date). */
  applied: string[];
}

interface Migration {
  name: string;
  sql: string;
  checksum: string;
}

interface MigrationRow {
  migration_name: string;
  checksum: string;
  finished_at: Date | null;
  rolled_back_at: Date | null;
}

const silentLogger: MigrationLogger = { info() {}, warn() {} };

/**
 * packages/core/{src,dist}/db/ → repository root. Both the tsx-run source and the compiled
 * output sit at the same depth, so one relative path serves both.
 */
export function defaultMigrationsDir(): string {
  return path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../../../prisma/migrations');
}

/** Prisma's checksum: sha256 of the migration file's bytes, lowercase hex. */
function checksumOf(sql: string): string {
  return createHash('sha256').update(sql, 'utf8').digest('hex');
}

export async function readMigrations(dir: string): Promise<Migration[]> {
  let entries: Dirent[];
  try {
    entries = await readdir(dir, { withFileTypes: true });
  } catch (err) {
    throw new Error(`cannot read the migrations directory ${dir}: ${(err as Error).message}`, { cause: err });
  }
  // Prisma orders migrations by directory name (they start with a UTC timestamp).
  const names = entries
    .filter((e) => e.isDirectory())
    .map((e) => e.name)
    .sort();
  const migrations: Migration[] = [];
  for (const name of names) {
    let sql: string;
    try {
      sql = await readFile(path.join(dir, name, 'migration.sql'), 'utf8');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') continue; // not a migration
      throw err;
    }
    migrations.push({ name, sql, checksum: checksumOf(sql) });
  }
  if (migrations.length === 0) throw new Error(`no migrations found in ${dir}`);
  return migrations;
}

export async function migrateDatabase(
  databaseUrl: string,
  logger: MigrationLogger = silentLogger,
  options: MigrateOptions = {},
): Promise<MigrateResult> {
  const migrations = await readMigrations(options.migrationsDir ?? defaultMigrationsDir());
  const client = new pg.Client({ connectionString: databaseUrl, application_name: 'kiln-migrate' });
  await client.connect();
  try {
    await client.query('BEGIN');
    try {
      const applied = await applyPending(client, migrations, logger);
      await client.query('COMMIT');
      if (applied.length > 0) logger.info(`database migrated: applied ${applied.join(', ')}`);
      return { applied };
    } catch (err) {
      await client.query('ROLLBACK').catch(() => {});
      throw err;
    }
  } finally {
    await client.end().catch(() => {});
  }
}

async function applyPending(
  client: pg.Client,
  migrations: Migration[],
  logger: MigrationLogger,
): Promise<string[]> {
  // Released at COMMIT/ROLLBACK, so an error can never leave it held.
  await client.query('SELECT pg_advisory_xact_lock($1)', [MIGRATE_LOCK_KEY]);
  // The CLI's definition, verbatim apart from IF NOT EXISTS.
  await client.query(`CREATE TABLE IF NOT EXISTS _prisma_migrations (
    id                      VARCHAR(36) PRIMARY KEY NOT NULL,
    checksum                VARCHAR(64) NOT NULL,
    finished_at             TIMESTAMPTZ,
    migration_name          VARCHAR(255) NOT NULL,
    logs                    TEXT,
    rolled_back_at          TIMESTAMPTZ,
    started_at              TIMESTAMPTZ NOT NULL DEFAULT now(),
    applied_steps_count     INTEGER NOT NULL DEFAULT 0
)`);
  const { rows } = await client.query<MigrationRow>(
    `SELECT migration_name, checksum, finished_at, rolled_back_at
       FROM _prisma_migrations ORDER BY started_at`,
  );

  const done = new Map<string, string>();
  for (const row of rows) {
    if (row.rolled_back_at) continue;
    if (!row.finished_at) {
      throw new Error(
        `migration ${row.migration_name} was started but never finished (a failed \`prisma migrate deploy\`?). ` +
          'Fix the database, then mark it with `prisma migrate resolve --applied|--rolled-back ' +
          `${row.migration_name}\`.`,
      );
    }
    done.set(row.migration_name, row.checksum);
  }

  const known = new Set(migrations.map((m) => m.name));
  for (const name of done.keys()) {
    if (!known.has(name)) {
      logger.warn(`migration ${name} is applied in the database but not in this build: is this build older?`);
    }
  }

  const applied: string[] = [];
  for (const m of migrations) {
    const checksum = done.get(m.name);
    if (checksum !== undefined) {
      if (checksum !== m.checksum) {
        logger.warn(`migration ${m.name} was modified after it was applied (checksum differs)`);
      }
      continue;
    }
    logger.info(`applying migration ${m.name}`);
    try {
      await client.query(m.sql);
    } catch (err) {
      throw new Error(`migration ${m.name} failed, nothing was applied: ${(err as Error).message}`, {
        cause: err,
      });
    }
    await client.query(
      `INSERT INTO _prisma_migrations (id, checksum, migration_name, started_at, finished_at, applied_steps_count)
       VALUES ($1, $2, $3, now(), clock_timestamp(), 1)`,
      [randomUUID(), m.checksum, m.name],
    );
    applied.push(m.name);
  }
  return applied;
}
