import { createHash } from 'node:crypto';
import type { BuildSpec } from './spec.js';

/**
 * Bumped whenever what takes part in the key changes, and whenever a fix changes what the same
 * inputs build, so that artifacts built before it stop being served. 2: contexts' extended
 * attributes reach the build (54bf566); a changed context no longer builds with files of the
 * project's previous one that have the same size, mtime and mode (752a22e); a worker that is not
 * root no longer sends files their owner may not read as empty ones. The API computes keys and
 * workers build: update workers before the API, or new keys may name artifacts of old workers.
 */
const KEY_VERSION = 2;

/**
 * The result-cache key of a build: a new build with the same key (in the same project, for the
 * same platform; see apps/api/src/result-cache.ts) can reuse an earlier build's artifact.
 *
 * It hashes the context digest (for a git build: repository URL, commit and subdirectory; see
 * apps/api/src/create-build.ts) and the normalized spec (what parseBuildSpec stored) except:
 * - `output.dest`: only the file name the artifact is downloaded as; the bytes don't depend on it.
 * - `noCache`: it makes BuildKit rebuild every step, which yields the same result. A noCache
 *   build never *reuses* a result, but its artifact may serve later builds.
 * Object keys are sorted first, so build args given in another order are the same key.
 */
export function resultCacheKey(contextDigest: string, spec: BuildSpec): string {
  const { noCache: _noCache, output, ...rest } = spec;
  const { dest: _dest, ...outputRest } = output;
  const material = { v: KEY_VERSION, context: contextDigest, spec: { ...rest, output: outputRest } };
  return createHash('sha256').update(canonicalJson(material)).digest('hex');
}

/** JSON with object keys sorted at every level. */
function canonicalJson(value: unknown): string {
  if (Array.isArray(value)) return `[${value.map(canonicalJson).join(',')}]`;
  if (value !== null && typeof value === 'object') {
    const entries = Object.entries(value as Record<string, unknown>)
      .filter(([, v]) => v !== undefined)
      .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
    return `{${entries.map(([k, v]) => `${JSON.stringify(k)}:${canonicalJson(v)}`).join(',')}}`;
  }
  return JSON.stringify(value);
}
