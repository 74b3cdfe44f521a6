/**
 * The shared build cache: BuildKit's cache of a project's builds, exported into Kiln's storage
 * after each build and imported before the next, so a builder that never saw the project starts
 * warm. With S3 storage the builder reads and writes the bucket itself (`type=s3`); with local
 * storage the worker serves the objects over the build's session (`type=local`, the session's
 * content store; the worker's build-cache-store.ts).
 * One prefix per project: a project imports only its own (cache poisoning and reading across
 * projects would otherwise be one `RUN` away). The worker bounds it (build-cache-store.ts) and
 * retention drops it (see the worker's retention).
 */
import type { StorageConfig } from './config.js';

/** Where every project's cache lives in the bucket. */
export const BUILD_CACHE_ROOT = 'cache/';
/** Where a project's cache objects live in the bucket. */
export const buildCachePrefix = (projectId: string) => `${BUILD_CACHE_ROOT}${projectId}/`;
/**
 * Written under a project's prefix, saying why, when its cache went past its bound (the session's
 * store refused a blob, or the worker measured it after a build): no build exports into it from
 * then on, retention drops it whole at its next pass, and the build after that starts a fresh one.
 * The bound is KILN_BUILD_CACHE_MAX_BYTES and what the project's stored-bytes quota leaves.
 */
export const BUILD_CACHE_FULL = 'full';

export type BuildCacheConfig = S3BuildCache | { kind: 'session'; maxBytes: number };

export interface S3BuildCache {
  kind: 's3';
  bucket: string;
  region: string;
  /** The S3 endpoint as the builders reach it (may differ from Kiln's own). */
  endpoint?: string;
  pathStyle: boolean;
  accessKeyId?: string;
  secretAccessKey?: string;
  /**
   * A project's cache past this many bytes takes no export (marked full) and is dropped whole by
   * retention (0: no bound).
   */
  maxBytes: number;
}

export interface CacheOption {
  type: string;
  attrs: Record<string, string>;
}

/**
 * The shared cache for this storage, or undefined when it is off. With S3, the builders get
 * `builderKeys` (KILN_BUILD_CACHE_S3_*), never the storage's own keys (config.ts says why);
 * without them, the daemon's own credentials.
 */
export function buildCacheFor(
  storage: StorageConfig,
  setting: 'auto' | 'off',
  builderEndpoint: string | undefined,
  maxBytes: number,
  builderKeys?: { accessKeyId: string; secretAccessKey: string },
): BuildCacheConfig | undefined {
  if (setting === 'off') return undefined;
  if (storage.kind !== 's3') return { kind: 'session', maxBytes };
  const endpoint = builderEndpoint ?? storage.endpoint;
  return {
    kind: 's3',
    bucket: storage.bucket,
    region: storage.region,
    ...(endpoint ? { endpoint } : {}),
    pathStyle: storage.forcePathStyle,
    ...(builderKeys ?? {}),
    maxBytes,
  };
}

/**
 * On every cache export: a cache that cannot be written (storage down, a bound reached) costs
 * the next build its warm start, never this build its result. BuildKit before v0.12 ignores it.
 */
export const CACHE_EXPORT_OPTIONAL = { 'ignore-error': 'true' } as const;

/**
 * BuildKit's `type=s3` cache import and export (mode=max: every stage's layers) of one project.
 * The builders' keys, when configured, go to the daemon in the solve request, never into a
 * build's containers; without them the daemon uses its own AWS credentials.
 */
export function buildCacheOptions(
  cache: S3BuildCache,
  projectId: string,
): { cacheImports: CacheOption[]; cacheExports: CacheOption[] } {
  const attrs: Record<string, string> = {
    bucket: cache.bucket,
    region: cache.region,
    prefix: buildCachePrefix(projectId),
    name: 'kiln',
    use_path_style: String(cache.pathStyle),
    ...(cache.endpoint ? { endpoint_url: cache.endpoint } : {}),
    ...(cache.accessKeyId && cache.secretAccessKey
      ? { access_key_id: cache.accessKeyId, secret_access_key: cache.secretAccessKey }
      : {}),
  };
  return {
    cacheImports: [{ type: 's3', attrs }],
    cacheExports: [{ type: 's3', attrs: { ...attrs, mode: 'max', ...CACHE_EXPORT_OPTIONAL } }],
  };
}
