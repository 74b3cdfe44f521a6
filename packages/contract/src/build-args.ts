/**
 * BuildKit reads build args named `BUILDKIT_*` as settings of the build itself, not as Dockerfile
 * variables. Some would break the isolation Kiln promises between projects:
 * `BUILDKIT_CACHE_MOUNT_NS` picks whose `RUN --mount=type=cache` directories a build sees (Kiln
 * sets it per project), `BUILDKIT_SYNTAX` swaps the frontend for an image of the caller's
 * choosing, `BUILDKIT_DISABLE_FILEOP` makes COPY run through a helper image. So every
 * `BUILDKIT_*` arg is refused (in any case, since a future BuildKit might read a new one), except
 * these, which only shape the caller's own result.
 */
export const ALLOWED_BUILDKIT_ARGS: readonly string[] = [
  // Keeps `.git` in a git context: the caller's own repository.
  'BUILDKIT_CONTEXT_KEEP_GIT_DIR',
  // Cache metadata in the exported image's config; no effect on other builds.
  'BUILDKIT_INLINE_CACHE',
  // Platform-split output layout even for one platform.
  'BUILDKIT_MULTI_PLATFORM',
  // What an SBOM attestation scans; Kiln requests no attestations, so they change nothing today.
  'BUILDKIT_SBOM_SCAN_CONTEXT',
  'BUILDKIT_SBOM_SCAN_STAGE',
  // The RUN containers' hostname (BuildKit ≥ 0.10).
  'BUILDKIT_SANDBOX_HOSTNAME',
  // Dockerfile lint checks (BuildKit ≥ 0.14); at most they fail the caller's build.
  'BUILDKIT_DOCKERFILE_CHECK',
];

const ALLOWED = new Set(ALLOWED_BUILDKIT_ARGS);

/**
 * Why the build arg `name` may not be sent, or undefined when it may. Pure, so the CLI refuses
 * with the server's words before uploading anything.
 */
export function reservedBuildArg(name: string): string | undefined {
  if (!name.toUpperCase().startsWith('BUILDKIT_') || ALLOWED.has(name)) return undefined;
  return `build arg "${name.slice(0, 100)}" is reserved: BUILDKIT_* args configure BuildKit itself, and Kiln accepts only ${ALLOWED_BUILDKIT_ARGS.join(', ')}`;
}
