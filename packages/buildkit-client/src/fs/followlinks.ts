import { lstat, readdir, readlink } from 'node:fs/promises';
import { join } from 'node:path';
import { goGlobMatch } from './globmatch.js';
import { basePath, cleanPath, compareGoStrings, dirPath, joinPath } from './gostrings.js';

// fsutil's FollowLinks: old Dockerfile frontends ask for the Dockerfile and .dockerignore by
// name ("followpaths"); when those are symlinks, the links and everything they point to
// (re-rooted at the context root, never outside it) become include patterns.

function isNotFound(err: unknown): boolean {
  const code = (err as NodeJS.ErrnoException | undefined)?.code;
  return code === 'ENOENT' || code === 'ENOTDIR';
}

function containsWildcards(name: string): boolean {
  for (let i = 0; i < name.length; i++) {
    const c = name[i];
    if (c === '\\') i++;
    else if (c === '*' || c === '?' || c === '[') return true;
  }
  return false;
}

/**
 * Drops every path below one already kept and returns undefined ("no filter") when the root
 * itself is in the list. fsutil documents sorted input but also applies it to unsorted include
 * patterns; then only a directly preceding parent drops a path (and so does a leading `/`).
 */
export function dedupePaths(paths: readonly string[]): string[] | undefined {
  const out: string[] = [];
  let last = '';
  for (const p of paths) {
    if (p === '.') return undefined;
    if (p.startsWith(`${last}/`)) continue;
    out.push(p);
    last = p;
  }
  return out;
}

class SymlinkResolver {
  readonly resolved = new Set<string>();

  constructor(private readonly root: string) {}

  async append(path: string): Promise<void> {
    let rest = joinPath('.', path);
    let current = '.';
    for (;;) {
      const slash = rest.indexOf('/');
      current = joinPath(current, slash < 0 ? rest : rest.slice(0, slash));
      const targets = await this.readSymlink(current, true);
      rest = slash < 0 ? '' : rest.slice(slash + 1);
      // Already seen: also what ends symlink loops.
      if ((rest === '' || targets !== undefined) && this.resolved.has(current)) return;
      if (targets !== undefined) {
        this.resolved.add(current);
        for (const target of targets) await this.append(joinPath(target, rest));
        return;
      }
      if (rest === '') {
        this.resolved.add(current);
        return;
      }
    }
  }

  /** Link targets as root-relative absolute paths, or undefined when `p` is no symlink. */
  private async readSymlink(p: string, allowWildcard: boolean): Promise<string[] | undefined> {
    const base = basePath(p);
    if (allowWildcard && containsWildcards(base)) {
      const dir = dirPath(p);
      const names = await this.readDirNames(dir);
      const out: string[] = [];
      for (const name of names ?? []) {
        if (!globMatchesQuietly(base, name)) continue;
        out.push(...((await this.readSymlink(joinPath(dir, name), false)) ?? []));
      }
      return out.length > 0 ? out : undefined;
    }
    const link = await this.readLinkAt(p);
    if (link === undefined) return undefined;
    const target = cleanPath(link);
    if (target.startsWith('/')) return [target];
    return [joinPath('/', joinPath(dirPath(p), target))];
  }

  private async readLinkAt(p: string): Promise<string | undefined> {
    const rel = cleanPath(p);
    if (rel === '.' || rel === '/') return undefined;
    const abs = join(this.root, rel);
    try {
      if (!(await lstat(abs)).isSymbolicLink()) return undefined;
    } catch (err) {
      if (isNotFound(err)) return undefined;
      throw err;
    }
    return readlink(abs);
  }

  /** Sorted names in `dir`; undefined when it is missing or no directory. */
  private async readDirNames(dir: string): Promise<string[] | undefined> {
    const rel = cleanPath(dir);
    const isRoot = rel === '.' || rel === '/';
    const abs = isRoot ? this.root : join(this.root, rel);
    if (!isRoot) {
      try {
        if (!(await lstat(abs)).isDirectory()) return undefined;
      } catch (err) {
        if (isNotFound(err)) return undefined;
        throw err;
      }
    }
    try {
      return (await readdir(abs)).sort(compareGoStrings);
    } catch (err) {
      // fsutil's walk ignores errors reading its root and skips directories that vanished.
      if (isRoot || isNotFound(err)) return [];
      throw err;
    }
  }
}

function globMatchesQuietly(pattern: string, name: string): boolean {
  try {
    return goGlobMatch(pattern, name);
  } catch {
    return false;
  }
}

/**
 * Resolves `paths` (relative to the real directory `root`) through symlinks. Returns the
 * paths to include, sorted and deduplicated, or undefined when the whole root is included.
 */
export async function followLinks(root: string, paths: readonly string[]): Promise<string[] | undefined> {
  const resolver = new SymlinkResolver(root);
  for (const p of paths) await resolver.append(p);
  return dedupePaths([...resolver.resolved].sort(compareGoStrings));
}
