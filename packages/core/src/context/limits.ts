/**
 * Limits applied to an uploaded build context while it streams through validation (and again,
 * as defence in depth, when the worker extracts the stored tar).
 */
export interface ContextLimits {
  /** Bytes of gzip input accepted (a raw tar upload is bounded by `maxUncompressedBytes` instead). */
  maxCompressedBytes: number;
  /** Bytes of tar (after decompression), headers and padding included: the size that gets stored. */
  maxUncompressedBytes: number;
  /** Entries in the archive (files, directories, symlinks, hard links; PAX/GNU meta headers excluded). */
  maxEntries: number;
  /** Bytes of one entry name or link target, wherever it comes from (ustar fields, PAX `path`, GNU 'L'). */
  maxNameBytes: number;
  /** Bytes of PAX extended-header data for one entry (all 'x' headers before it), or of one 'g' header. */
  maxPaxHeaderBytes: number;
  /**
   * Bytes of the extended attributes a context keeps (PAX `SCHILY.xattr.*` records: names and
   * values, plus a cost per entry and per attribute; see tar.ts) in the whole archive. The worker
   * holds them in memory beside the extracted tree, since Node cannot set them on disk.
   */
  maxXattrBytes: number;
  /** Largest tar-bytes / gzip-bytes ratio, checked continuously while inflating. */
  maxDecompressionRatio: number;
  /**
   * Output below which the ratio is not enforced. A small honest context compresses far better than
   * 100:1 (a tar of one short Dockerfile is 10 KiB of mostly zeros that gzip to ~150 bytes), so the
   * ratio only means something once a meaningful amount has been inflated. A bomb is still stopped
   * after inflating at most `max(ratioGraceBytes, maxDecompressionRatio × compressed bytes read)`.
   */
  ratioGraceBytes: number;
}

const KiB = 1024;
const MiB = 1024 * KiB;
const GiB = 1024 * MiB;

export const DEFAULT_CONTEXT_LIMITS: Readonly<ContextLimits> = Object.freeze({
  maxCompressedBytes: 1 * GiB,
  maxUncompressedBytes: 4 * GiB,
  maxEntries: 250_000,
  maxNameBytes: 4096,
  maxPaxHeaderBytes: 64 * KiB,
  maxXattrBytes: 1 * MiB,
  maxDecompressionRatio: 100,
  ratioGraceBytes: 1 * MiB,
});

/** Defaults overlaid with `overrides`; throws a TypeError for a limit that is not a positive number
 * (`ratioGraceBytes` may be 0). */
export function resolveContextLimits(overrides: Partial<ContextLimits> = {}): ContextLimits {
  const limits: ContextLimits = { ...DEFAULT_CONTEXT_LIMITS };
  for (const [key, value] of Object.entries(overrides) as [keyof ContextLimits, unknown][]) {
    if (value === undefined) continue;
    if (!(key in DEFAULT_CONTEXT_LIMITS)) throw new TypeError(`unknown context limit "${key}"`);
    const min = key === 'ratioGraceBytes' ? 0 : Number.MIN_VALUE;
    if (typeof value !== 'number' || Number.isNaN(value) || value < min) {
      throw new TypeError(`context limit ${key} must be a positive number, got ${String(value)}`);
    }
    limits[key] = value;
  }
  return limits;
}

/** The context limits an operator sets (KILN_MAX_CONTEXT_*): the API validates and the worker extracts with them. */
export function contextLimitsOf(limits: {
  maxContextBytes: number;
  maxContextEntries: number;
}): Partial<ContextLimits> {
  return {
    maxUncompressedBytes: limits.maxContextBytes,
    maxCompressedBytes: limits.maxContextBytes,
    maxEntries: limits.maxContextEntries,
  };
}
