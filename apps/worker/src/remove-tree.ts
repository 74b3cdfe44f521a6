/**
 * Removes a directory tree this process wrote from a build's input or output. Extraction gives a
 * context's directories owner rwx on disk (a tar's 0555 `ro/` goes to BuildKit as 0555 all the
 * same), but a tree left by an older worker, or one whose modes were changed since, may hold
 * directories without write permission; a worker that is not root (the image's `node`) then
 * cannot unlink what is inside them, and the build would leave its files on the worker's disk. So
 * when removal is refused, the tree's directories are made the owner's again (u+rwx) and removal
 * is tried once more.
 */
import { chmod, readdir, rm } from 'node:fs/promises';
import path from 'node:path';

const removal = { recursive: true, force: true, maxRetries: 3 } as const;

export async function removeTree(dir: string): Promise<void> {
  try {
    await rm(dir, removal);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code !== 'EACCES' && code !== 'EPERM') throw err;
    await makeOwnerWritable(dir);
    await rm(dir, removal);
  }
}

/** chmod 0700 on every directory below `root` (symlinks are not followed), without recursion. */
async function makeOwnerWritable(root: string): Promise<void> {
  const pending = [root];
  for (let dir = pending.pop(); dir !== undefined; dir = pending.pop()) {
    // Not ours, or gone: the second rm reports what still stands in its way.
    const entries = await chmod(dir, 0o700)
      .then(() => readdir(dir, { withFileTypes: true }))
      .catch(() => []);
    for (const entry of entries) if (entry.isDirectory()) pending.push(path.join(dir, entry.name));
  }
}
