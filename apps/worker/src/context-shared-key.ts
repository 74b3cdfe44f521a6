/**
 * The session's shared key for an uploaded context. BuildKit keeps the last copy of a local
 * source under its key and diff-copies the next one onto it, and fsutil's receiver takes a file
 * whose size, mtime (ns) and mode did not change for unchanged: it keeps the old content and
 * attributes. Tars often carry fixed mtimes (`tar --mtime`, Bazel's pkg_tar, SOURCE_DATE_EPOCH),
 * so under one key per project a file edited in place, to the same size, would build with its
 * old content. The key is therefore one per stored context (its storage key is the digest of
 * every byte of the tar, extended attributes included) and Dockerfile (the `dockerfile` local
 * holds only the Dockerfile and its ignore file, and one tar can hold several). A context built
 * again is not sent again; a changed one is sent whole.
 */
import { createHash } from 'node:crypto';

export function contextSharedKey(projectId: string, contextKey: string, dockerfile: string): string {
  const hash = createHash('sha256').update(`${contextKey}\0${dockerfile}`).digest('hex');
  return `kiln-${projectId}-${hash.slice(0, 32)}`;
}
