import { readdir, rm, stat } from 'node:fs/promises';
import path from 'node:path';

/**
 * Removes the files under `dir` whose name matches `name` and that nobody has written for
 * `olderThanMs`: what a killed process left half-written (a put's temp file, an upload being
 * received). Live writers touch their file all the time, so age tells them apart from the dead
 * without knowing which process wrote what. Returns the paths removed; a missing `dir` is none.
 */
export async function removeStaleFiles(
  dir: string,
  name: RegExp,
  olderThanMs: number,
  now = Date.now(),
): Promise<string[]> {
  const removed: string[] = [];
  let entries: import('node:fs').Dirent[];
  try {
    entries = await readdir(dir, { withFileTypes: true });
  } catch {
    return removed;
  }
  for (const entry of entries) {
    const file = path.join(dir, entry.name);
    if (entry.isDirectory()) removed.push(...(await removeStaleFiles(file, name, olderThanMs, now)));
    else if (entry.isFile() && name.test(entry.name)) {
      const info = await stat(file).catch(() => undefined);
      if (info && now - info.mtimeMs > olderThanMs) {
        await rm(file, { force: true });
        removed.push(file);
      }
    }
  }
  return removed;
}
