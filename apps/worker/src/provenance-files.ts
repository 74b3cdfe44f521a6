/** Where BuildKit's tar exporter writes the provenance of a single-platform result. */
export const PROVENANCE_FILE = 'provenance.json';
/** Larger than any provenance statement BuildKit writes (mode=max of a big Dockerfile is ~100 KiB). */
export const MAX_PROVENANCE_BYTES = 8 * 1024 * 1024;

/**
 * Whether a path in a tar export is where BuildKit writes provenance: `provenance.json` at the
 * root for one platform, `<platform dir>/provenance.json` in its per-platform layout. Nothing
 * deeper: every match is held in memory, and a build's own files may bear the name anywhere
 * (a few dozen of 8 MiB would take the worker past its memory limit). So at most one file per
 * platform is held.
 */
export function isProvenancePath(name: string, platformCount: number): boolean {
  const parts = name.split('/');
  return parts.length === (platformCount > 1 ? 2 : 1) && parts.at(-1) === PROVENANCE_FILE;
}
