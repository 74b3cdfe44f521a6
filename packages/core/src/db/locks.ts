import type { Prisma } from './generated/client.js';

/** Advisory-lock class ("KILN" in ASCII) of context objects; the second key is the storage key's hash. */
const CONTEXT_LOCK_CLASS = 0x4b494c4e;

/**
 * Takes PostgreSQL's transaction-level advisory lock on a context object (released at commit or
 * rollback). Retention holds it `exclusive` while it checks that no recent or unfinished build
 * uses the object and deletes it; the API holds it `shared` while it checks that the object
 * exists and inserts the build that will read it. So a context is never deleted between the
 * API's check and its insert, and API requests do not wait for each other.
 */
export async function lockContextObject(
  tx: Prisma.TransactionClient,
  key: string,
  mode: 'shared' | 'exclusive',
): Promise<void> {
  // $executeRaw: the functions return `void`, which the query path would have to deserialize.
  if (mode === 'shared') {
    await tx.$executeRaw`SELECT pg_advisory_xact_lock_shared(${CONTEXT_LOCK_CLASS}::int4, hashtext(${key}))`;
  } else {
    await tx.$executeRaw`SELECT pg_advisory_xact_lock(${CONTEXT_LOCK_CLASS}::int4, hashtext(${key}))`;
  }
}
