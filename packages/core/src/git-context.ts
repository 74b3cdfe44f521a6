import path from 'node:path/posix';
import { AppError } from './errors.js';
import { redactAddress } from './net/redact-address.js';

/**
 * A remote build context that BuildKit fetches itself: `url#ref:subdir` in docker's syntax.
 * BuildKit's Dockerfile frontend takes the `context` attribute as a git repository only when it
 * is git://… or http(s)://….git (optionally with a #fragment); anything else http(s) would be
 * downloaded as a tarball, so such URLs are refused here rather than misread there.
 */
export interface GitContext {
  /** Repository URL, without fragment. */
  url: string;
  /** Branch, tag or commit; the remote's default branch when absent. */
  ref?: string;
  /** Directory of the repository to use as the context (needs BuildKit v0.9 or later). */
  subdir?: string;
}

const MAX_URL = 2048;
const REF = /^[A-Za-z0-9._/-]{1,255}$/;
const SUBDIR = /^[A-Za-z0-9._/ @+-]{1,1024}$/;
const COMMIT = /^(?:[0-9a-f]{40}|[0-9a-f]{64})$/;

function invalid(field: string, message: string): never {
  throw new AppError('invalid_spec', `${field}: ${message}`);
}

/**
 * Checks a repository URL BuildKit can fetch without credentials: http, https (path ending in
 * .git) or git://, none with a query; no user info, which BuildKit would print into the build log.
 */
export function parseGitUrl(value: unknown, field = 'git'): string {
  if (typeof value !== 'string' || value === '') invalid(field, 'must be a repository URL');
  if (value.length > MAX_URL) invalid(field, `is longer than ${MAX_URL} characters`);
  // A backslash is a slash to the URL parser here and to no parser of BuildKit's or git's:
  // `http://ok.example\@127.0.0.1/r.git` would be checked as one host and fetched from another.
  // biome-ignore lint/suspicious/noControlCharactersInRegex: control characters are what is refused
  if (/[\s\u0000-\u001f\u007f#\\]/.test(value))
    invalid(field, 'must not contain spaces, control characters, backslashes or #');
  let url: URL;
  try {
    url = new URL(value);
  } catch {
    // Quoted without its credentials: a token, as often as not.
    return invalid(field, `"${redactAddress(value).slice(0, 200)}" is not a URL`);
  }
  if (!['http:', 'https:', 'git:'].includes(url.protocol)) {
    invalid(field, `only http, https and git:// repository URLs are supported, not ${url.protocol}`);
  }
  if (url.hostname === '') invalid(field, 'the URL has no host');
  if (url.username || url.password) {
    invalid(field, 'credentials in the URL are not supported (they would show in the build log)');
  }
  // BuildKit reads ref, subdir, keep-git-dir and more from a query, of any scheme: they would
  // pass by the checks made here on `#ref:subdir`. `?` alone is a query too.
  if (url.search !== '' || value.includes('?')) {
    invalid(field, 'must not have a query (?...): name the ref and subdirectory as url#ref:subdir');
  }
  if (url.protocol !== 'git:' && !url.pathname.endsWith('.git')) {
    invalid(field, 'an http(s) repository URL must end in .git (e.g. https://host/org/repo.git)');
  }
  return value;
}

/** Parses docker's remote context syntax `url[#ref][:subdir]`. */
export function parseGitContext(value: unknown, field = 'git'): GitContext {
  if (typeof value !== 'string') return invalid(field, 'must be a string like https://host/org/repo.git#ref');
  const hash = value.indexOf('#');
  const url = parseGitUrl(hash < 0 ? value : value.slice(0, hash), field);
  if (hash < 0) return { url };
  const { ref, subdir } = splitFragment(value.slice(hash + 1), field);
  return { url, ...(ref ? { ref } : {}), ...(subdir ? { subdir } : {}) };
}

/** `ref[:subdir]`, both optional (git forbids ':' in ref names, so the split is unambiguous). */
function splitFragment(fragment: string, field: string): { ref?: string; subdir?: string } {
  const colon = fragment.indexOf(':');
  const ref = colon < 0 ? fragment : fragment.slice(0, colon);
  const rawDir = colon < 0 ? '' : fragment.slice(colon + 1);
  if (ref !== '' && (!REF.test(ref) || ref.includes('..') || ref.startsWith('-'))) {
    invalid(field, `"${ref.slice(0, 100)}" is not a valid branch, tag or commit`);
  }
  if (rawDir === '') return ref ? { ref } : {};
  const subdir = path.normalize(rawDir).replace(/\/$/, '');
  if (!SUBDIR.test(rawDir) || subdir.startsWith('/') || subdir === '..' || subdir.startsWith('../')) {
    invalid(field, `subdirectory "${rawDir.slice(0, 100)}" must be a relative path inside the repository`);
  }
  return subdir === '.' ? (ref ? { ref } : {}) : { ...(ref ? { ref } : {}), subdir };
}

/** A full commit id (sha1 or sha256 object format). */
export function isCommitId(ref: string | undefined | null): ref is string {
  return typeof ref === 'string' && COMMIT.test(ref);
}

/**
 * How a git build is stored on its row: gitRef keeps the fragment as given (`ref[:subdir]`;
 * a pushed branch's full name for webhook builds), gitCommit the commit when known.
 */
export function gitRefColumn(ctx: GitContext): string | null {
  if (!ctx.ref && !ctx.subdir) return null;
  return `${ctx.ref ?? ''}${ctx.subdir ? `:${ctx.subdir}` : ''}`;
}

/** The subdirectory a stored git build's gitRef names (`ref:subdir`), or ''. */
export function gitSubdirOf(gitRef: string | null): string {
  const colon = (gitRef ?? '').indexOf(':');
  return colon < 0 ? '' : (gitRef ?? '').slice(colon + 1);
}

/**
 * The BuildKit `context` attribute of a stored git build: pinned to the commit when known, so a
 * branch that moved after the push still builds the pushed commit.
 */
export function gitContextAttr(build: {
  gitUrl: string;
  gitRef: string | null;
  gitCommit: string | null;
}): string {
  const fragment = build.gitRef ?? '';
  const colon = fragment.indexOf(':');
  const ref = colon < 0 ? fragment : fragment.slice(0, colon);
  const subdir = gitSubdirOf(build.gitRef);
  const pin = build.gitCommit ?? ref;
  if (!pin && !subdir) return build.gitUrl;
  return `${build.gitUrl}#${pin}${subdir ? `:${subdir}` : ''}`;
}
