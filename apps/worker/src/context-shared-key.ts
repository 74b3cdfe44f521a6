/**
 * The session's shared key for a project's build context. One per project, so that BuildKit
 * diff-copies each context onto the project's last one and transfers only the files that
 * changed. fsutil's receiver keeps a file whose size, mtime and mode did not change as it was,
 * extended attributes included, so a context that has attributes gets a key per set of them:
 * otherwise a changed attribute on an unchanged file would build with its old value.
 */
import { createHash } from 'node:crypto';

export function contextSharedKey(
  projectId: string,
  xattrs?: ReadonlyMap<string, Readonly<Record<string, Buffer>>>,
): string {
  const key = `kiln-${projectId}`;
  if (!xattrs?.size) return key;
  const hash = createHash('sha256');
  // Every name and value goes with its length, so that no two sets hash the same bytes.
  const add = (bytes: Buffer | string) => hash.update(`${Buffer.byteLength(bytes)}:`).update(bytes);
  for (const path of [...xattrs.keys()].sort()) {
    const attrs = xattrs.get(path) ?? {};
    const names = Object.keys(attrs).sort();
    add(path);
    hash.update(`${names.length}:`);
    for (const name of names) {
      add(name);
      add(attrs[name] as Buffer);
    }
  }
  return `${key}-xattrs-${hash.digest('hex').slice(0, 32)}`;
}
