import type { Dirent } from 'node:fs';
import { readdir, realpath, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { BuildkitError } from '../errors.js';
import { dedupePaths, followLinks } from './followlinks.js';
import { compareGoStrings } from './gostrings.js';
import { type MatchInfo, type Pattern, PatternMatcher } from './patternmatcher.js';
import { type HardlinkMap, statEntry, type WalkEntry } from './stat.js';

export type { WalkEntry } from './stat.js';

export interface WalkOptions {
  /** Only these paths (and what is below them) are walked: BuildKit's `include-patterns`. */
  includePatterns?: string[];
  /** BuildKit's `exclude-patterns`, usually the .dockerignore; `!` patterns take paths back. */
  excludePatterns?: string[];
  /**
   * BuildKit's `followpaths`: paths whose symlinks are resolved and added to the include
   * patterns. Leave undefined when the request has none: an empty list is not the same thing
   * to fsutil (it still deduplicates the include patterns).
   */
  followPaths?: string[];
}

export type WalkErrorCode =
  | 'ROOT_NOT_DIRECTORY'
  | 'INVALID_INCLUDE_PATTERNS'
  | 'INVALID_EXCLUDE_PATTERNS'
  | 'INCLUDE_MATCH_FAILED'
  | 'EXCLUDE_MATCH_FAILED'
  | 'UNDECODABLE_NAME';

/** The walk could not start or a pattern failed while matching; file system errors pass through as is. */
export class WalkError extends BuildkitError {
  constructor(code: WalkErrorCode, message: string, options?: { cause?: unknown }) {
    super(code, message, options);
  }
}

interface Filter {
  include: PatternMatcher | undefined;
  exclude: PatternMatcher | undefined;
  /** No include pattern has wildcards before its last `/*` or `/**`: unmatched dirs can be skipped. */
  onlyPrefixIncludes: boolean;
  /** Likewise for the `!` exceptions among the exclude patterns. */
  onlyPrefixExcludeExceptions: boolean;
}

interface VisitedDir {
  path: string;
  absPath: string;
  /** `path/`: later paths not starting with it are outside this directory. */
  prefix: string;
  includeInfo: MatchInfo;
  excludeInfo: MatchInfo;
  emitted: boolean;
}

type Action = 'continue' | 'skip';

interface Visit {
  action: Action;
  emit: WalkEntry[];
}

const CONTINUE: Visit = { action: 'continue', emit: [] };
const SKIP: Visit = { action: 'skip', emit: [] };

const PATTERN_CHARS = /[*[\]?^\\]/;

function patternWithoutTrailingGlob(p: Pattern): string {
  let s = p.cleaned;
  if (s.endsWith('/**')) s = s.slice(0, -3);
  if (s.endsWith('/*')) s = s.slice(0, -2);
  return s;
}

/** Whether some pattern of the given kind names `dir` or a path below it without wildcards. */
function someLiteralPatternBelow(matcher: PatternMatcher, exclusion: boolean, dir: string): boolean {
  const dirSlash = `${dir}/`;
  return matcher.patterns.some(
    (p) => p.exclusion === exclusion && `${patternWithoutTrailingGlob(p)}/`.startsWith(dirSlash),
  );
}

function errnoCode(err: unknown): string | undefined {
  return (err as NodeJS.ErrnoException | undefined)?.code;
}

// fsutil turns "gone" into "skip": a file deleted mid-walk ends its directory's listing.
function isNotExist(err: unknown): boolean {
  const code = errnoCode(err);
  return code === 'ENOENT' || code === 'ENOTDIR';
}

function newMatcher(patterns: string[], code: WalkErrorCode, what: string): PatternMatcher {
  try {
    return new PatternMatcher(patterns);
  } catch (err) {
    throw new WalkError(code, `invalid ${what}: [${patterns.join(' ')}]: ${(err as Error).message}`, {
      cause: err,
    });
  }
}

async function buildFilter(root: string, opts: WalkOptions): Promise<Filter> {
  let includes = opts.includePatterns && [...opts.includePatterns];
  if (opts.followPaths !== undefined) {
    const targets = await followLinks(root, opts.followPaths);
    if (targets !== undefined) includes = dedupePaths([...(includes ?? []), ...targets]);
  }
  const include =
    includes && includes.length > 0
      ? newMatcher(includes, 'INVALID_INCLUDE_PATTERNS', 'includepatterns')
      : undefined;
  const exclude =
    opts.excludePatterns && opts.excludePatterns.length > 0
      ? newMatcher(opts.excludePatterns, 'INVALID_EXCLUDE_PATTERNS', 'excludepatterns')
      : undefined;
  const literal = (matcher: PatternMatcher | undefined, exclusion: boolean) =>
    !matcher?.patterns.some(
      (p) => p.exclusion === exclusion && PATTERN_CHARS.test(patternWithoutTrailingGlob(p)),
    );
  return {
    include,
    exclude,
    onlyPrefixIncludes: literal(include, false),
    onlyPrefixExcludeExceptions: literal(exclude, true),
  };
}

async function resolveRoot(root: string): Promise<string> {
  const real = await realpath(root);
  if (!(await stat(real)).isDirectory()) {
    throw new WalkError('ROOT_NOT_DIRECTORY', `${real} is not a directory`);
  }
  return real;
}

/** Names sorted as Go sorts them (bytewise UTF-8), which fixes the order of the whole walk. */
async function readSortedDir(absPath: string): Promise<Dirent[]> {
  const entries = await readdir(absPath, { withFileTypes: true });
  return entries.sort((a, b) => compareGoStrings(a.name, b.name));
}

/** fsutil's filterFS walk callback, one entry at a time, with its directory bookkeeping. */
class FilteredWalk {
  private readonly parents: VisitedDir[] = [];
  private readonly hardlinks: HardlinkMap = new Map();

  constructor(private readonly filter: Filter) {}

  /**
   * Decides on one entry. Called again for a directory whose listing failed, with `listErr`.
   * `skip` means: do not descend (directory) or drop the rest of the listing (anything else).
   */
  visit(path: string, absPath: string, isDir: boolean, listErr?: unknown): Visit {
    try {
      return this.decide(path, absPath, isDir, listErr);
    } catch (err) {
      if (!isNotExist(err)) throw err;
      // Node decodes names as UTF-8, so one that is not (Latin-1 from an old archive, say) has
      // become U+FFFD and names nothing on disk. Skipping it, as a file removed mid-walk is,
      // would silently drop the rest of its directory; Go would have sent its bytes. An excluded
      // directory walked only for `!` exceptions below it (listErr) is skipped as before.
      if (listErr === undefined && path.includes('\uFFFD')) {
        throw new WalkError(
          'UNDECODABLE_NAME',
          `${path}: a file name that is not valid UTF-8 (shown with U+FFFD) cannot be sent; rename it, or exclude it`,
          { cause: err },
        );
      }
      return SKIP;
    }
  }

  private decide(path: string, absPath: string, isDir: boolean, listErr: unknown): Visit {
    const { include, exclude } = this.filter;
    let dir: VisitedDir | undefined;
    if (include || exclude) {
      while (this.parents.length > 0 && !path.startsWith((this.parents.at(-1) as VisitedDir).prefix)) {
        this.parents.pop();
      }
      if (isDir) {
        dir = { path, absPath, prefix: `${path}/`, includeInfo: [], excludeInfo: [], emitted: false };
      }
    }
    const parent = this.parents.at(-1);
    let skip = false;

    if (include) {
      const { matched, info } = this.match(include, path, parent?.includeInfo, 'INCLUDE_MATCH_FAILED');
      if (dir) dir.includeInfo = info;
      if (!matched) {
        if (isDir && this.filter.onlyPrefixIncludes && !someLiteralPatternBelow(include, false, path))
          return SKIP;
        // Still descended: something below may be included.
        skip = true;
      }
    }

    if (exclude) {
      const { matched, info } = this.match(exclude, path, parent?.excludeInfo, 'EXCLUDE_MATCH_FAILED');
      if (dir) dir.excludeInfo = info;
      if (matched) {
        if (isDir && this.filter.onlyPrefixExcludeExceptions) {
          if (!exclude.exclusions() || !someLiteralPatternBelow(exclude, true, path)) return SKIP;
        }
        // Still descended: a `!` exception may take something below back.
        skip = true;
      }
    }

    if (listErr !== undefined) {
      const code = errnoCode(listErr);
      if (skip && (code === 'EACCES' || code === 'EPERM')) return CONTINUE;
      throw listErr;
    }

    try {
      if (skip) return CONTINUE;
      const self = statEntry(path, absPath, this.hardlinks);
      // Directories skipped on the way down are sent once something inside them is kept.
      const emit: WalkEntry[] = [];
      for (const p of this.parents) {
        if (p.emitted) continue;
        emit.push(statEntry(p.path, p.absPath, this.hardlinks));
        p.emitted = true;
      }
      if (dir) dir.emitted = true;
      emit.push(self);
      return { action: 'continue', emit };
    } finally {
      if (dir) this.parents.push(dir);
    }
  }

  private match(
    matcher: PatternMatcher,
    path: string,
    parentInfo: MatchInfo | undefined,
    code: 'INCLUDE_MATCH_FAILED' | 'EXCLUDE_MATCH_FAILED',
  ): { matched: boolean; info: MatchInfo } {
    try {
      return matcher.matchesUsingParentResults(path, parentInfo);
    } catch (err) {
      const what = code === 'INCLUDE_MATCH_FAILED' ? 'includepatterns' : 'excludepatterns';
      throw new WalkError(code, `failed to match ${what}: ${(err as Error).message}`, { cause: err });
    }
  }
}

interface Frame {
  path: string;
  absPath: string;
  entries: Dirent[];
  next: number;
}

/**
 * Walks `root` the way fsutil does for BuildKit's FileSync: depth-first, each directory's
 * names in Go byte order, filtered by include/exclude patterns and followpaths. Only stats and
 * lists; the caller reads file data from `absPath` later. One sorted listing is held per level.
 */
export async function* walk(root: string, opts: WalkOptions = {}): AsyncGenerator<WalkEntry> {
  const rootPath = await resolveRoot(root);
  const walker = new FilteredWalk(await buildFilter(rootPath, opts));

  const stack: Frame[] = [];
  try {
    stack.push({ path: '', absPath: rootPath, entries: await readSortedDir(rootPath), next: 0 });
  } catch {
    // fsutil never reports a failure to list the root itself: the context is just empty.
    return;
  }

  while (stack.length > 0) {
    const frame = stack.at(-1) as Frame;
    const dirent = frame.entries[frame.next++];
    if (dirent === undefined) {
      stack.pop();
      continue;
    }
    const path = frame.path === '' ? dirent.name : `${frame.path}/${dirent.name}`;
    const absPath = join(frame.absPath, dirent.name);
    const isDir = dirent.isDirectory();

    const visit = walker.visit(path, absPath, isDir);
    yield* visit.emit;
    if (visit.action === 'skip') {
      if (!isDir) frame.next = frame.entries.length;
      continue;
    }
    if (!isDir) continue;

    let entries: Dirent[];
    try {
      entries = await readSortedDir(absPath);
    } catch (err) {
      // Asked again with the error, as Go's WalkDir does; it may tolerate it or fail the walk.
      walker.visit(path, absPath, true, err);
      continue;
    }
    stack.push({ path, absPath, entries, next: 0 });
  }
}
