/**
 * The one rule for a build's `file`: a `/`-separated path naming a file inside the context,
 * relative to its root. Returns the path normalized (`./a/../b/Dockerfile` → `b/Dockerfile`), or
 * undefined when it is not one:
 * - empty, absolute (`/x`), or holding a NUL;
 * - holding a backslash: a separator to a Windows caller, an ordinary character to BuildKit on
 *   Linux; refusing it means neither reading builds a file the caller did not mean;
 * - naming a directory: `.`, `a/..`, a trailing `/` or `/.`;
 * - stepping above the root at any point (`../x`, `a/../../x`), even if it comes back down.
 * Pure (no Node path module), so the CLI can apply it before sending exactly as the server does.
 */
export function dockerfileInContext(file: string): string | undefined {
  if (file === '' || file.startsWith('/') || file.includes('\0') || file.includes('\\')) return undefined;
  const segments = file.split('/');
  const last = segments.at(-1);
  if (last === '' || last === '.' || last === '..') return undefined;
  const kept: string[] = [];
  for (const segment of segments) {
    if (segment === '' || segment === '.') continue;
    if (segment !== '..') kept.push(segment);
    else if (kept.pop() === undefined) return undefined;
  }
  return kept.join('/');
}
