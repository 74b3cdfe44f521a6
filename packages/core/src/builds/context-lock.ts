/**
 * The context-object lock: how a build that will read a stored context and retention, which
 * deletes contexts nobody uses, never cross. This file is the whole protocol.
 *
 * - Retention (BuildRepository.deleteContextIfUnused) takes PostgreSQL's transaction-level
 *   advisory lock on the context's key **exclusive**, checks under it that no recent or unfinished
 *   build uses the object, deletes the object and marks the rows.
 * - The API inserts a queued build that reads the context in one statement that first takes the
 *   same lock **shared** (insertWithContextLockSql below), held until the insert commits.
 * - So retention either sees that build (and keeps the object) or finished deleting before the
 *   insert committed; the API then checks the object after its commit and stores it again
 *   (create-build.ts). Inserts take the lock shared, so API requests never wait for each other.
 */
import type { Prisma } from '../db/generated/client.js';

/** Advisory-lock class ("KILN" in ASCII) of context objects; the second key is the storage key's hash. */
export const CONTEXT_LOCK_CLASS = 0x4b494c4e;

/**
 * Takes the lock inside `tx` (released at commit or rollback): `exclusive` is retention's side;
 * `shared` is the API's, which the insert takes in SQL (insertWithContextLockSql), so only tests
 * take it through here.
 */
export function lockContextObject(
  tx: Prisma.TransactionClient,
  key: string,
  mode: 'shared' | 'exclusive',
): Prisma.PrismaPromise<number> {
  // $executeRaw: the functions return `void`, which the query path would have to deserialize.
  return mode === 'shared'
    ? tx.$executeRaw`SELECT pg_advisory_xact_lock_shared(${CONTEXT_LOCK_CLASS}::int4, hashtext(${key}))`
    : tx.$executeRaw`SELECT pg_advisory_xact_lock(${CONTEXT_LOCK_CLASS}::int4, hashtext(${key}))`;
}

/**
 * The API's side, as one statement: `INSERT ... SELECT <params> FROM lock`, where the CTE takes
 * the shared lock on `$1`/`$2` (class, key) before the row goes in. `columns` and `params` are
 * the insert's column list and its SELECT list (parameters from `$3` on); `where` may make the
 * insert conditional.
 */
export function insertWithContextLockSql(table: string, columns: string, params: string, where = ''): string {
  return `WITH lock AS (SELECT pg_advisory_xact_lock_shared($1::int4, hashtext($2)))
    INSERT INTO "${table}" (${columns}) SELECT ${params} FROM lock ${where} RETURNING *`;
}
