import { BuildkitError } from '../errors.js';
import { BadGlobError, goGlobMatch } from './globmatch.js';
import { cleanPath, dirPath, trimSpace } from './gostrings.js';
import { compileRe2 } from './re2.js';

export { cleanPath } from './gostrings.js';

export type PatternErrorCode = 'ILLEGAL_EXCLUSION_PATTERN' | 'BAD_PATTERN';

/** A pattern is malformed: a lone `!`, or a glob/regexp syntax error (Go's `filepath.ErrBadPattern`). */
export class PatternError extends BuildkitError {
  constructor(
    code: PatternErrorCode,
    message: string,
    readonly pattern: string,
    options?: { cause?: unknown },
  ) {
    super(code, message, options);
  }
}

export type MatchType = 'exact' | 'prefix' | 'suffix' | 'regexp';

export interface CompiledGlob {
  type: MatchType;
  /** Go regexp (RE2) source; empty unless `type` is `regexp`. */
  source: string;
}

const REGEXP_ONLY_SPECIALS = new Set(['.', '+', '(', ')', '|', '{', '}', '$']);

/**
 * patternmatcher's `Pattern.compile`: classifies a cleaned pattern and, for the general case,
 * builds the same RE2 source Go does (so the compile test table carries over verbatim).
 */
export function compileGlob(pattern: string): CompiledGlob {
  const chars = Array.from(pattern);
  // Go reads the pattern through text/scanner, which drops a leading byte order mark.
  let pos = chars[0] === '\uFEFF' ? 1 : 0;
  let re = '^';
  let type: MatchType = 'exact';
  for (let i = 0; pos < chars.length; i++) {
    const c = chars[pos++] as string;
    if (c === '*') {
      if (chars[pos] === '*') {
        pos++;
        // `**/` is `**`: the slash is optional.
        if (chars[pos] === '/') pos++;
        if (pos >= chars.length) {
          if (type === 'exact') {
            type = 'prefix';
          } else {
            re += '.*';
            type = 'regexp';
          }
        } else {
          re += '(.*/)?';
          type = 'regexp';
        }
        if (i === 0) type = 'suffix';
      } else {
        re += '[^/]*';
        type = 'regexp';
      }
    } else if (c === '?') {
      re += '[^/]';
      type = 'regexp';
    } else if (REGEXP_ONLY_SPECIALS.has(c)) {
      re += `\\${c}`;
    } else if (c === '\\') {
      if (pos < chars.length) {
        re += `\\${chars[pos++]}`;
        type = 'regexp';
      } else {
        re += '\\';
      }
    } else if (c === '[' || c === ']') {
      re += c;
      type = 'regexp';
    } else {
      re += c;
    }
  }
  return type === 'regexp' ? { type, source: `${re}$` } : { type, source: '' };
}

type Matcher = (path: string) => boolean;

/** The most characters the patterns with wildcards may have together (PatternMatcher). */
export const MAX_WILDCARD_PATTERN_CHARS = 16 * 1024;

// Go slices "**" off the pattern's bytes. Only a leading byte order mark (skipped by
// compileGlob) makes that cut land inside a character: Go's suffix is then the mark's last
// byte, 0xBF, followed by the rest of the pattern, so the path must end with that rest right
// after a character whose UTF-8 form ends in 0xBF.
function suffixMatcher(cleaned: string): Matcher {
  if (cleaned.startsWith('**')) {
    const suffix = cleaned.slice(2);
    // `**/foo` also matches `foo` itself.
    const bare = suffix.startsWith('/') ? suffix.slice(1) : undefined;
    return (path) => path.endsWith(suffix) || path === bare;
  }
  const rest = cleaned.slice(1);
  return (path) => {
    if (!path.endsWith(rest)) return false;
    const before = Array.from(path.slice(0, path.length - rest.length))
      .at(-1)
      ?.codePointAt(0);
    return before !== undefined && before >= 0x80 && (before & 0x3f) === 0x3f;
  };
}

function buildMatcher(cleaned: string): Matcher {
  const { type, source } = compileGlob(cleaned);
  switch (type) {
    case 'exact':
      return (path) => path === cleaned;
    case 'prefix': {
      const prefix = cleaned.slice(0, -2);
      return (path) => path.startsWith(prefix);
    }
    case 'suffix':
      return suffixMatcher(cleaned);
    case 'regexp': {
      return compileRe2(source);
    }
  }
}

/** One cleaned pattern; `!` exceptions have `exclusion` set and the `!` removed. */
export class Pattern {
  private matcher: Matcher | undefined;

  constructor(
    /** The pattern after Go's `filepath.Clean` and without its `!`. */
    readonly cleaned: string,
    readonly exclusion: boolean,
  ) {}

  toString(): string {
    return this.cleaned;
  }

  /**
   * Compiled on first use, like Go: a pattern whose regexp does not compile only fails when
   * it is evaluated, and fails again on every later call.
   */
  match(path: string): boolean {
    if (this.matcher === undefined) {
      try {
        this.matcher = buildMatcher(this.cleaned);
      } catch (err) {
        throw new PatternError('BAD_PATTERN', 'syntax error in pattern', this.cleaned, { cause: err });
      }
    }
    return this.matcher(path);
  }

  /** Parent checks in patternmatcher ignore errors: a broken pattern just does not match. */
  matchQuietly(path: string): boolean {
    try {
      return this.match(path);
    } catch {
      return false;
    }
  }
}

/** Per-pattern results for a directory, handed down to its children (patternmatcher's MatchInfo). */
export type MatchInfo = readonly boolean[];

function parentPrefixes(file: string): string[] {
  const parent = dirPath(file);
  if (parent === '.') return [];
  const dirs = parent.split('/');
  return dirs.map((_, i) => dirs.slice(0, i + 1).join('/'));
}

/** moby/patternmatcher's PatternMatcher: later patterns win, `!` patterns take paths back. */
export class PatternMatcher {
  readonly patterns: readonly Pattern[];
  private readonly hasExclusions: boolean;

  /** Throws {@link PatternError} for a lone `!` or a pattern `filepath.Match` rejects. */
  constructor(patterns: readonly string[]) {
    const parsed: Pattern[] = [];
    let hasExclusions = false;
    for (const raw of patterns) {
      let p = trimSpace(raw);
      if (p === '') continue;
      // Cleaned before the `!` is removed, so `!/a` and `!./a` keep their prefixes.
      p = cleanPath(p);
      let exclusion = false;
      if (p.startsWith('!')) {
        if (p.length === 1) {
          throw new PatternError('ILLEGAL_EXCLUSION_PATTERN', 'illegal exclusion pattern: "!"', raw);
        }
        exclusion = true;
        hasExclusions = true;
        p = p.slice(1);
      }
      try {
        goGlobMatch(p, '.');
      } catch (err) {
        if (!(err instanceof BadGlobError)) throw err;
        throw new PatternError('BAD_PATTERN', err.message, raw, { cause: err });
      }
      parsed.push(new Pattern(p, exclusion));
    }
    // Matching is linear in pattern and path (re2.ts), but the patterns may be a tenant's: a
    // bound on what every path is matched against keeps one walk from holding a process for
    // minutes. Far beyond any hand-written .dockerignore.
    const wildcards = parsed.filter((p) => /[*?[\\]/.test(p.cleaned));
    const size = wildcards.reduce((n, p) => n + p.cleaned.length, 0);
    if (size > MAX_WILDCARD_PATTERN_CHARS) {
      throw new PatternError(
        'BAD_PATTERN',
        `the patterns with wildcards add up to ${size} characters, over the ${MAX_WILDCARD_PATTERN_CHARS} this matcher takes`,
        wildcards.at(-1)?.cleaned ?? '',
      );
    }
    this.patterns = parsed;
    this.hasExclusions = hasExclusions;
  }

  /** Whether any pattern is a `!` exception. */
  exclusions(): boolean {
    return this.hasExclusions;
  }

  /** Whether `file` (slash-separated) or one of its parent directories matches, last pattern winning. */
  matchesOrParentMatches(file: string): boolean {
    const parents = parentPrefixes(file);
    let matched = false;
    for (const pattern of this.patterns) {
      // An inclusion cannot change a match and an exclusion cannot change a non-match.
      if (pattern.exclusion !== matched) continue;
      const match = pattern.match(file) || parents.some((dir) => pattern.matchQuietly(dir));
      if (match) matched = !pattern.exclusion;
    }
    return matched;
  }

  /** Like {@link matchesOrParentMatches} without looking at parent directories. */
  matchesExact(file: string): boolean {
    let matched = false;
    for (const pattern of this.patterns) {
      if (pattern.exclusion !== matched) continue;
      if (pattern.match(file)) matched = !pattern.exclusion;
    }
    return matched;
  }

  /**
   * The walker's form: `parent` is the `info` returned for the parent directory (or empty at
   * the top, which makes this look at parent directories itself). Patterns the parent matched
   * are not evaluated again.
   */
  matchesUsingParentResults(file: string, parent: MatchInfo = []): { matched: boolean; info: MatchInfo } {
    if (parent.length !== 0 && parent.length !== this.patterns.length) {
      throw new RangeError('wrong number of values in parentMatched');
    }
    let matched = false;
    const info = new Array<boolean>(this.patterns.length).fill(false);
    let parents: string[] | undefined;
    this.patterns.forEach((pattern, i) => {
      let match = parent[i] ?? false;
      if (!match) {
        if (pattern.exclusion !== matched) return;
        match = pattern.match(file);
        if (!match && parent.length === 0) {
          parents ??= parentPrefixes(file);
          match = parents.some((dir) => pattern.matchQuietly(dir));
        }
      }
      info[i] = match;
      if (match) matched = !pattern.exclusion;
    });
    return { matched, info };
  }
}
