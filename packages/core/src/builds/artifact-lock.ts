/**
 * The shared-artifact lock: how a build answered from the result cache and retention, which
 * deletes an artifact object once no live build shares it, never cross. This file is the whole
 * protocol.
 *
 * - A cached build shares its source build's artifact object (same artifactKey, never copied).
 * - The API inserts the cached row inside a transaction that first holds the source row
 *   `FOR SHARE` while it is still `succeeded` (holdCacheSource); if the source is no longer
 *   succeeded, nothing is inserted and the build runs normally.
 * - Retention expires a row with an UPDATE, which waits for that row lock; only after its own
 *   UPDATE does it count the live rows sharing the key (BuildRepository.liveBuildsSharing) and
 *   delete the object when there are none. So it either sees the new cached row, or the API's
 *   transaction finds the source expired and inserts nothing.
 */
import type { Prisma } from '../db/generated/client.js';

/** The API's side: true when the source is still `succeeded`, now locked until `tx` ends. */
export async function holdCacheSource(tx: Prisma.TransactionClient, sourceId: string): Promise<boolean> {
  const held = await tx.$queryRaw<Array<{ id: string }>>`
    SELECT id FROM "Build" WHERE id = ${sourceId} AND status = 'succeeded' FOR SHARE`;
  return held.length > 0;
}
