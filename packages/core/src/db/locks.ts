import type { Prisma } from './generated/client.js';

/** Advisory-lock class ("KILN" in ASCII) of context objects; the second key is the storage key's hash. */
export const CONTEXT_LOCK_CLASS = 0x4b494c4e;

/**
 * Takes PostgreSQL's transaction-level advisory lock on a context object (released at commit or
 * rollback). Retention holds it `exclusive` while it checks that no recent or unfinished build
 * uses the object and deletes it; the API takes it `shared` in the statement that inserts a
 * build reading the object (HotQueries.insertQueuedBuild, in SQL, with CONTEXT_LOCK_CLASS). So
 * retention either sees that build or has finished deleting before the insert commits (the API
 * checks the object after its commit and puts it back), and API requests do not wait for each other.
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
