import type { BuildView } from '@kiln/contract';
import {
  type Build,
  type BuildSpec,
  type ObjectStorage,
  provenanceKey,
  recordsProvenance,
  redactAddress,
} from '@kiln/core';

/** The name a build's artifact downloads as: its spec's `output.dest`. */
export function artifactFilename(build: Build): string {
  const spec = build.spec as { output?: { dest?: string } };
  return spec.output?.dest ?? 'output.tar';
}

/**
 * The JSON a caller sees for a build; a succeeded one carries a freshly signed download URL (an
 * expired one none: its artifact is gone). A build answered from the result cache says `cached`
 * and names the build that ran (`cachedFrom`). A git build (POST with {git}, or a webhook push)
 * has `git` instead of an uploaded `context`.
 */
export async function buildView(
  build: Build,
  storage: ObjectStorage,
  urlTtlSeconds: number,
  publicUrl: string,
): Promise<BuildView> {
  const self = `${publicUrl}/v1/builds/${build.id}`;
  const view: BuildView = {
    id: build.id,
    status: build.status,
    spec: build.spec as BuildView['spec'],
    source: build.source,
    // A git build has no uploaded context: BuildKit fetched the repository.
    context: build.contextDigest ? { digest: build.contextDigest, size: Number(build.contextSize) } : null,
    git: build.gitUrl
      ? { url: build.gitUrl, ref: build.gitRef, commit: build.gitCommit, trigger: build.triggerId }
      : null,
    attempts: build.attempts,
    builder: build.builder === null ? null : redactAddress(build.builder),
    platform: build.platform,
    cached: build.cachedFromId !== null,
    cachedFrom: build.cachedFromId,
    createdAt: build.createdAt.toISOString(),
    startedAt: build.startedAt?.toISOString() ?? null,
    finishedAt: build.finishedAt?.toISOString() ?? null,
    links: { self, logs: `${self}/logs`, artifact: `${self}/artifact`, cancel: `${self}/cancel` },
  };
  if (build.errorCode) view.error = { code: build.errorCode, message: build.errorMessage ?? '' };
  if (build.status === 'succeeded' && build.imageDigest) {
    const spec = build.spec as { output?: { attrs?: { name?: string } } };
    view.image = { name: spec.output?.attrs?.name ?? '', digest: build.imageDigest };
  }
  if (build.status === 'succeeded' && build.artifactKey) {
    const filename = artifactFilename(build);
    view.artifact = {
      filename,
      size: Number(build.artifactSize ?? 0),
      digest: build.artifactDigest,
      url: await storage.signedUrl(build.artifactKey, { expiresInSeconds: urlTtlSeconds, filename }),
      expiresAt: new Date(Date.now() + urlTtlSeconds * 1000).toISOString(),
    };
    const provenance = provenanceOf(build);
    if (provenance) {
      view.links.provenance = `${self}/provenance`;
      view.provenance = {
        mode: provenance.mode,
        url: await storage.signedUrl(provenance.key, {
          expiresInSeconds: urlTtlSeconds,
          filename: 'provenance.json',
        }),
        expiresAt: view.artifact.expiresAt,
      };
    }
  }
  return view;
}

/**
 * Where Kiln keeps a succeeded build's provenance, when its spec asked for it and its output
 * carries it in a file (a tar); undefined otherwise.
 */
export function provenanceOf(build: Build): { key: string; mode: string } | undefined {
  const spec = build.spec as Partial<Pick<BuildSpec, 'provenance' | 'output'>>;
  if (build.status !== 'succeeded' || !build.artifactKey || !spec.provenance || !spec.output)
    return undefined;
  if (!recordsProvenance({ provenance: spec.provenance, output: spec.output })) return undefined;
  return { key: provenanceKey(build.artifactKey), mode: spec.provenance };
}
