/**
 * What a builder can do and what a build needs, and the one rule matching them. Workers derive
 * a builder's capabilities from its Control.Info and ListWorkers answers and publish them
 * (builderCapabilitiesKey); the API refuses at POST a spec that no published builder satisfies,
 * and the worker's pool leases a build only to a builder that satisfies it.
 *
 * Adding a spec field that needs a newer BuildKit: name a feature in BUILDER_FEATURES, give it
 * its first version in FEATURE_SINCE (or a rule in featuresOf), and ask for it in
 * specRequirements. Nothing else changes.
 */
import { type BuildSpec, platformsOf } from './spec.js';

export const BUILDER_FEATURES = [
  /** `--output type=oci` / `type=docker`: moby's own BuildKit worker (dockerd) has neither exporter. */
  'exporter:oci',
  'exporter:docker',
  /** `--output type=image,push=true`: a standalone buildkitd pushes; dockerd's moby exporter does not. */
  'exporter:image-push',
  /** `attest:provenance` / SBOM attestations (BuildKit ≥ 0.11). */
  'attestations',
  /** SOURCE_DATE_EPOCH applied to the exporters' timestamps (`rewrite-timestamp`, BuildKit ≥ 0.13). */
  'source-date-epoch',
  /** Cache export backends (`--cache-to type=…`); dockerd's embedded BuildKit exports inline only. */
  'cache-export:inline',
  'cache-export:local',
  'cache-export:registry',
  'cache-export:s3',
  /**
   * A cache export that fails does not fail the build (`ignore-error`, BuildKit ≥ 0.12). Kiln's
   * shared build cache is exported only where it holds: before, a full or unreachable cache
   * failed the whole solve.
   */
  'cache-export:ignore-error',
  /** A git context's subdirectory (`url#ref:subdir`, BuildKit ≥ 0.9; before: "subdir not supported yet"). */
  'git-subdir',
] as const;
export type BuilderFeature = (typeof BUILDER_FEATURES)[number];

export interface BuilderCapabilities {
  /**
   * BuildKit version from Control.Info (e.g. `v0.24.0`); null when the daemon has no Info RPC
   * (BuildKit before 0.11, such as dockerd 20.10's 0.8) and reports no version elsewhere.
   */
  version: string | null;
  /** The platforms its BuildKit workers report, as `os/arch[/variant]`, the default first. */
  platforms: string[];
  features: BuilderFeature[];
}

export interface SpecRequirements {
  /** Platforms the build asks for (normalized); empty: the builder's default. */
  platforms: string[];
  features: BuilderFeature[];
}

/** First BuildKit version with each feature; absent features come with every version. */
const FEATURE_SINCE: Partial<Record<BuilderFeature, readonly [number, number]>> = {
  attestations: [0, 11],
  'source-date-epoch': [0, 13],
  'cache-export:s3': [0, 11],
  'cache-export:ignore-error': [0, 12],
  'git-subdir': [0, 9],
};

/** Features of moby's own worker (dockerd's embedded BuildKit, ListWorkers id "moby"). */
const MOBY_FEATURES: ReadonlySet<BuilderFeature> = new Set(['cache-export:inline', 'git-subdir']);

function parseVersion(version: string | null): [number, number] | undefined {
  const m = version ? /^v?(\d+)\.(\d+)/.exec(version) : null;
  return m ? [Number(m[1]), Number(m[2])] : undefined;
}

function atLeast(v: [number, number] | undefined, since: readonly [number, number]): boolean {
  if (!v) return false;
  return v[0] > since[0] || (v[0] === since[0] && v[1] >= since[1]);
}

/**
 * The features of a daemon from its version (null: older than 0.11, the first with Control.Info)
 * and whether its worker is moby's (dockerd's embedded BuildKit: tar, local and image exporters,
 * inline cache only).
 */
export function featuresOf(version: string | null, mobyWorker: boolean): BuilderFeature[] {
  const v = parseVersion(version);
  return BUILDER_FEATURES.filter((f) => {
    if (mobyWorker && !MOBY_FEATURES.has(f)) return false;
    const since = FEATURE_SINCE[f];
    return since === undefined || atLeast(v, since);
  });
}

const ARCH_ALIASES: Readonly<Record<string, string>> = {
  x86_64: 'amd64',
  'x86-64': 'amd64',
  aarch64: 'arm64',
  i386: '386',
  i686: '386',
};

/** `os/arch[/variant]` as BuildKit names it: x86_64 → amd64, aarch64 → arm64, arm64/v8 → arm64. */
export function normalizePlatform(platform: string): string {
  const [os = '', rawArch = '', variant] = platform.toLowerCase().split('/');
  const arch = ARCH_ALIASES[rawArch] ?? rawArch;
  if (!variant || (arch === 'arm64' && variant === 'v8')) return `${os}/${arch}`;
  return `${os}/${arch}/${variant}`;
}

/**
 * What a build needs of a builder: its spec, and of its source whether it is a git context's
 * subdirectory. The one place that maps what a build asks for to builder features.
 */
export function specRequirements(spec: BuildSpec, source: { gitSubdir?: boolean } = {}): SpecRequirements {
  const features: BuilderFeature[] = [];
  if (source.gitSubdir) features.push('git-subdir');
  if (spec.output.type === 'oci') features.push('exporter:oci');
  if (spec.output.type === 'docker') features.push('exporter:docker');
  if (spec.output.type === 'image') features.push('exporter:image-push');
  if (spec.provenance) features.push('attestations');
  if (spec.sourceDateEpoch !== undefined) features.push('source-date-epoch');
  return { platforms: [...new Set(platformsOf(spec).map(normalizePlatform))], features };
}

/**
 * A platform the builder reports serves a request without variant when os and arch agree
 * (linux/amd64 is built by every amd64 builder), and one with a variant only exactly.
 */
function servesPlatform(reported: readonly string[], wanted: string): boolean {
  const w = wanted.split('/');
  return reported.some((r) => {
    const p = normalizePlatform(r).split('/');
    return p[0] === w[0] && p[1] === w[1] && (w[2] === undefined || p[2] === w[2]);
  });
}

/** What `caps` lacks of `req`, for messages ("platform linux/s390x", "feature exporter:oci"); empty when it serves. */
export function unmetRequirements(caps: BuilderCapabilities, req: SpecRequirements): string[] {
  return [
    ...req.platforms.filter((p) => !servesPlatform(caps.platforms, p)).map((p) => `platform ${p}`),
    ...req.features.filter((f) => !caps.features.includes(f)).map((f) => `feature ${f}`),
  ];
}

/** Reads a published capabilities JSON; undefined when it is not one. */
export function parseBuilderCapabilities(raw: unknown): BuilderCapabilities | undefined {
  if (typeof raw !== 'string') return undefined;
  try {
    const v = JSON.parse(raw) as Partial<BuilderCapabilities>;
    const strings = (a: unknown): a is string[] => Array.isArray(a) && a.every((x) => typeof x === 'string');
    if (typeof v !== 'object' || v === null) return undefined;
    if (!(v.version === null || typeof v.version === 'string')) return undefined;
    if (!strings(v.platforms) || !strings(v.features)) return undefined;
    const known = new Set<string>(BUILDER_FEATURES);
    return {
      version: v.version,
      platforms: v.platforms,
      features: v.features.filter((f): f is BuilderFeature => known.has(f)),
    };
  } catch {
    return undefined;
  }
}
