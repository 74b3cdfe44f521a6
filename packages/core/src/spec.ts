import path from 'node:path/posix';
import {
  ARTIFACT_NAME,
  dockerfileInContext,
  OUTPUT_TYPES,
  type OutputType,
  reservedBuildArg,
} from '@kiln/contract';
import { parseBuildSecrets } from './build-secrets.js';
import { AppError } from './errors.js';
import { unstorable } from './storable-text.js';

export { OUTPUT_TYPES, type OutputType };

export interface OutputSpec {
  type: OutputType;
  /** Artifact file name the caller downloads (docker's `dest`), a base name only. */
  dest: string;
  /** Exporter attributes passed through to BuildKit (e.g. `name` for oci/docker). */
  attrs: Record<string, string>;
}

export interface BuildSpec {
  output: OutputSpec;
  /** Dockerfile path inside the context. */
  file: string;
  target?: string;
  buildArgs: Record<string, string>;
  platform?: string;
  labels: Record<string, string>;
  noCache: boolean;
  network: 'default' | 'none';
  /** Ids of the build's secrets, sorted; their values are never part of a spec (see build-secrets.ts). */
  secrets?: string[];
  /** SLSA provenance BuildKit attaches to the result (`attest:provenance`, mode min or max). */
  provenance?: ProvenanceMode;
  /** SOURCE_DATE_EPOCH: the timestamp the exporters give every file, for reproducible artifacts. */
  sourceDateEpoch?: number;
}

export const PROVENANCE_MODES = ['min', 'max'] as const;
export type ProvenanceMode = (typeof PROVENANCE_MODES)[number];

/** Loose input as it arrives from a query string, form fields or JSON. */
export interface BuildSpecInput {
  output?: unknown;
  target?: unknown;
  source?: unknown;
  file?: unknown;
  buildArgs?: unknown;
  platform?: unknown;
  labels?: unknown;
  noCache?: unknown;
  network?: unknown;
  secrets?: unknown;
  provenance?: unknown;
  sourceDateEpoch?: unknown;
}

/** The fields a build spec may have, in every form it arrives in (query, form fields, JSON). */
export const SPEC_FIELDS: readonly string[] = [
  'output',
  'target',
  'source',
  'file',
  'buildArgs',
  'platform',
  'labels',
  'noCache',
  'network',
  'secrets',
  'provenance',
  'sourceDateEpoch',
];
const SPEC_KEYS = new Set(SPEC_FIELDS);
const OUTPUT_ATTRS: Record<OutputType, ReadonlySet<string>> = {
  tar: new Set([]),
  local: new Set([]),
  oci: new Set(['name', 'compression', 'compression-level', 'force-compression', 'oci-mediatypes']),
  docker: new Set(['name', 'compression', 'compression-level', 'force-compression', 'oci-mediatypes']),
  image: new Set([
    'name',
    'push',
    'registry.insecure',
    'compression',
    'compression-level',
    'force-compression',
    'oci-mediatypes',
  ]),
};
// docker's reference grammar, simplified: [host[:port]/]path[:tag][@digest], lowercase path.
const IMAGE_REFERENCE =
  /^(?:(?<host>[a-zA-Z0-9.-]+(?::\d{1,5})?|\[[0-9a-fA-F:]+\](?::\d{1,5})?)\/)?[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*(?:\/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*(?::[\w][\w.-]{0,127})?(?:@sha256:[0-9a-f]{64})?$/;
const MAX_IMAGE_NAMES = 10;
const ARG_NAME = /^[A-Za-z_][A-Za-z0-9_]*$/;
const STAGE_NAME = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$/;
const PLATFORM = /^[a-z0-9]+\/[a-z0-9_]+(\/[a-z0-9]+)?$/;
const LABEL_KEY = /^[A-Za-z0-9][A-Za-z0-9._/-]{0,254}$/;
const MAX_VALUE = 64 * 1024;
// 9999-12-31T23:59:59Z: what Go's time formatting (and so BuildKit) still writes in a tar header.
const MAX_EPOCH = 253_402_300_799;
const MAX_ENTRIES = 200;
const MAX_PLATFORMS = 8;

function invalid(message: string): never {
  throw new AppError('invalid_spec', message);
}

function str(value: unknown, field: string, max = 1024): string | undefined {
  if (value === undefined || value === null || value === '') return undefined;
  if (typeof value !== 'string') invalid(`${field} must be a string`);
  if (value.length > max) invalid(`${field} is longer than ${max} characters`);
  const why = unstorable(value);
  if (why) invalid(`${field} contains ${why}`);
  return value;
}

function bool(value: unknown, field: string): boolean {
  if (value === undefined || value === null || value === '') return false;
  if (typeof value === 'boolean') return value;
  if (value === 'true' || value === '1') return true;
  if (value === 'false' || value === '0') return false;
  return invalid(`${field} must be true or false`);
}

/**
 * `os/arch[/variant]`, or several comma-separated (docker's `--platform linux/amd64,linux/arm64`):
 * one build, one artifact in BuildKit's per-platform layout. Kept as given, duplicates dropped.
 */
function parsePlatforms(value: unknown): string | undefined {
  const text = str(value, 'platform', 512);
  if (text === undefined) return undefined;
  const platforms = [...new Set(text.split(',').map((p) => p.trim()))];
  if (platforms.length > MAX_PLATFORMS) invalid(`platform names at most ${MAX_PLATFORMS} platforms`);
  for (const p of platforms) {
    if (!PLATFORM.test(p)) {
      invalid(`platform "${p.slice(0, 64)}" is not os/arch[/variant], e.g. linux/amd64 or linux/arm64/v8`);
    }
  }
  return platforms.join(',');
}

/** The platforms of a spec (empty: the builder's default). */
export function platformsOf(spec: Pick<BuildSpec, 'platform'>): string[] {
  return spec.platform ? spec.platform.split(',') : [];
}

/**
 * buildx's `--provenance` values: `min`, `max`, `mode=min|max`, or true (min, buildx's default)
 * / false (none).
 */
function parseProvenance(value: unknown): ProvenanceMode | undefined {
  if (value === undefined || value === null || value === '' || value === false || value === 'false')
    return undefined;
  if (value === true || value === 'true' || value === '1') return 'min';
  if (typeof value === 'string') {
    const mode = value.startsWith('mode=') ? value.slice('mode='.length) : value;
    const known = PROVENANCE_MODES.find((m) => m === mode);
    if (known) return known;
  }
  return invalid(
    `provenance must be "min" or "max" (or true for min), not ${JSON.stringify(value).slice(0, 100)}`,
  );
}

function parseEpoch(value: unknown, field: string): number | undefined {
  if (value === undefined || value === null || value === '') return undefined;
  const n = typeof value === 'string' && /^\d{1,12}$/.test(value) ? Number(value) : value;
  if (typeof n !== 'number' || !Number.isInteger(n) || n < 0 || n > MAX_EPOCH) {
    invalid(`${field} must be whole seconds since 1970-01-01 UTC, from 0 to ${MAX_EPOCH}`);
  }
  return n as number;
}

/** Splits docker's CSV syntax (`type=tar,dest=app.tar`), honouring "quoted, values". */
export function parseCsvPairs(spec: string, field: string): Record<string, string> {
  const out: Record<string, string> = {};
  const fields: string[] = [];
  let cur = '';
  let quoted = false;
  for (const c of spec) {
    if (c === '"') quoted = !quoted;
    else if (c === ',' && !quoted) {
      fields.push(cur);
      cur = '';
    } else cur += c;
  }
  if (quoted) invalid(`${field}: unterminated quote in "${spec}"`);
  fields.push(cur);
  for (const f of fields.map((x) => x.trim()).filter(Boolean)) {
    const eq = f.indexOf('=');
    if (eq <= 0) invalid(`${field}: "${f}" is not key=value (expected e.g. type=tar,dest=app.tar)`);
    const key = f.slice(0, eq).trim().toLowerCase();
    if (key in out) invalid(`${field}: "${key}" is given twice`);
    out[key] = f.slice(eq + 1).trim();
  }
  return out;
}

function parseOutput(value: unknown): OutputSpec {
  let raw: Record<string, unknown>;
  if (value === undefined || value === null || value === '') raw = { type: 'tar' };
  else if (typeof value === 'string') {
    const text = value.trim();
    raw = text.startsWith('{') ? parseJsonObject(text, 'output') : parseCsvPairs(text, 'output');
  } else if (typeof value === 'object' && !Array.isArray(value)) raw = value as Record<string, unknown>;
  else return invalid('output must be a string like "type=tar,dest=app.tar" or an object {type, dest}');

  const { type = 'tar', dest, ...rest } = raw;
  if (typeof type !== 'string') return invalid('output.type must be a string');
  const t = OUTPUT_TYPES.find((known) => known === type);
  if (t === undefined) {
    return invalid(
      `output type "${type.slice(0, 64)}" is not supported; use one of ${OUTPUT_TYPES.join(', ')}`,
    );
  }
  const attrs: Record<string, string> = {};
  for (const [k, v] of Object.entries(rest)) {
    if (k === 'mode') {
      invalid(
        `"mode" is not an option of the ${t} output: mode=min|max belongs to cache export (docker's --cache-to), not to --output`,
      );
    }
    if (!OUTPUT_ATTRS[t].has(k)) {
      const allowed = [...OUTPUT_ATTRS[t]];
      invalid(
        `"${k}" is not an option of the ${t} output${allowed.length ? ` (accepted: ${allowed.join(', ')})` : ''}`,
      );
    }
    attrs[k] = str(v, `output.${k}`) ?? '';
  }
  if (t === 'image') checkImageAttrs(attrs);
  const name = str(dest, 'output.dest', 255) ?? 'output.tar';
  if (!ARTIFACT_NAME.test(name)) {
    invalid(
      `output dest "${name}" must be a plain file name of letters, digits, ".", "_" and "-" that starts with a letter, digit or "_", e.g. app.tar`,
    );
  }
  return { type: t, dest: name, attrs };
}

/** An image output is pushed: the builder's own image store is no place for a caller's result. */
function checkImageAttrs(attrs: Record<string, string>): void {
  if (attrs.push !== 'true') {
    invalid('an image output must be pushed: add push=true (and name=registry/repo:tag)');
  }
  if (!attrs.name) invalid('an image output needs name=registry/repo:tag');
  const names = attrs.name.split(',');
  if (names.length > MAX_IMAGE_NAMES) invalid(`an image output takes at most ${MAX_IMAGE_NAMES} names`);
  for (const ref of names) {
    if (!IMAGE_REFERENCE.test(ref)) {
      invalid(
        `output name "${ref.slice(0, 200)}" is not an image reference like registry.example/team/app:1.0`,
      );
    }
  }
  for (const flag of ['registry.insecure', 'force-compression', 'oci-mediatypes']) {
    if (attrs[flag] !== undefined && attrs[flag] !== 'true' && attrs[flag] !== 'false')
      invalid(`output ${flag} must be true or false`);
  }
}

/** The registry hosts an image output pushes to (Docker Hub's when a name has none). */
export function imageRegistryHosts(spec: Pick<BuildSpec, 'output'>): string[] {
  if (spec.output.type !== 'image') return [];
  const hosts = (spec.output.attrs.name ?? '').split(',').map((ref) => {
    const host = IMAGE_REFERENCE.exec(ref)?.groups?.host;
    // docker's rule (splitDockerDomain), which BuildKit follows: a first component is a host with
    // a dot, a port, `localhost`, or an upper-case letter (`Registry/app` is pushed to `Registry`).
    return host && (/[.:[A-Z]/.test(host) || host === 'localhost') ? host.toLowerCase() : 'docker.io';
  });
  return [...new Set(hosts)];
}

function parseJsonObject(text: string, field: string): Record<string, unknown> {
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch {
    return invalid(`${field} is not valid JSON`);
  }
  if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed))
    invalid(`${field} must be a JSON object`);
  return parsed as Record<string, unknown>;
}

/** `{K: V}`, a JSON string of one, or docker-style `["K=V", ...]`. */
function parseMap(
  value: unknown,
  field: string,
  keyPattern: RegExp,
  keyHint: string,
): Record<string, string> {
  if (value === undefined || value === null || value === '') return {};
  let entries: Array<[string, unknown]>;
  if (typeof value === 'string') return parseMap(parseJsonObject(value, field), field, keyPattern, keyHint);
  if (Array.isArray(value)) {
    entries = value.map((item) => {
      if (typeof item !== 'string' || item.indexOf('=') <= 0) invalid(`${field} entries must be "KEY=VALUE"`);
      const s = item as string;
      return [s.slice(0, s.indexOf('=')), s.slice(s.indexOf('=') + 1)];
    });
  } else if (typeof value === 'object') entries = Object.entries(value as Record<string, unknown>);
  else return invalid(`${field} must be an object of strings`);
  if (entries.length > MAX_ENTRIES) invalid(`${field} has more than ${MAX_ENTRIES} entries`);
  const out: Record<string, string> = {};
  for (const [k, v] of entries) {
    if (!keyPattern.test(k)) invalid(`${field} name "${k.slice(0, 100)}" is invalid: ${keyHint}`);
    if (typeof v !== 'string') invalid(`${field}.${k} must be a string`);
    // Defined, not assigned: `out.__proto__ = v` would set the prototype and drop the entry.
    const value = str(v, `${field}.${k}`, MAX_VALUE) ?? '';
    Object.defineProperty(out, k, { value, enumerable: true, writable: true, configurable: true });
  }
  return out;
}

/** Validates and normalizes a build spec; every problem is an AppError('invalid_spec') naming the field. */
export function parseBuildSpec(input: BuildSpecInput): BuildSpec {
  if (typeof input !== 'object' || input === null || Array.isArray(input))
    invalid('the build spec must be an object');
  for (const key of Object.keys(input)) {
    if (!SPEC_KEYS.has(key))
      invalid(`unknown spec field "${key.slice(0, 100)}" (accepted: ${[...SPEC_KEYS].join(', ')})`);
  }
  const target = str(input.target, 'target', 128);
  const source = str(input.source, 'source', 128);
  if (target && source && target !== source) invalid('target and source (its alias) disagree');
  const stage = target ?? source;
  if (stage !== undefined && !STAGE_NAME.test(stage)) invalid(`target "${stage}" is not a valid stage name`);

  const fileRaw = str(input.file, 'file', 1024) ?? 'Dockerfile';
  const file =
    dockerfileInContext(fileRaw) ??
    invalid(`file "${fileRaw}" must be a path inside the context, e.g. Dockerfile or docker/app.Dockerfile`);

  const platform = parsePlatforms(input.platform);
  const network = str(input.network, 'network', 16) ?? 'default';
  if (network !== 'default' && network !== 'none')
    invalid(`network must be "default" or "none", not "${network}"`);
  // Validated here too, so a bad secret is an invalid spec wherever a spec is parsed.
  const secretIds = Object.keys(parseBuildSecrets(input.secrets));
  const buildArgs = parseMap(
    input.buildArgs,
    'buildArgs',
    ARG_NAME,
    'letters, digits and _ only, not starting with a digit',
  );
  for (const name of Object.keys(buildArgs)) {
    const reserved = reservedBuildArg(name);
    if (reserved) invalid(reserved);
  }
  // `--build-arg SOURCE_DATE_EPOCH=…` is how docker users ask for it: one field holds it, so that
  // routing to a builder that honours it and the result cache see it the same way.
  const epochArg = parseEpoch(buildArgs.SOURCE_DATE_EPOCH, 'buildArgs.SOURCE_DATE_EPOCH');
  const epochField = parseEpoch(input.sourceDateEpoch, 'sourceDateEpoch');
  if (epochArg !== undefined && epochField !== undefined && epochArg !== epochField)
    invalid('sourceDateEpoch and buildArgs.SOURCE_DATE_EPOCH disagree');
  delete buildArgs.SOURCE_DATE_EPOCH;
  const sourceDateEpoch = epochField ?? epochArg;
  const provenance = parseProvenance(input.provenance);

  return {
    output: parseOutput(input.output),
    file,
    ...(stage !== undefined ? { target: stage } : {}),
    buildArgs,
    ...(platform !== undefined ? { platform } : {}),
    labels: parseMap(input.labels, 'labels', LABEL_KEY, 'letters, digits and . _ / - only'),
    noCache: bool(input.noCache, 'noCache'),
    network,
    ...(secretIds.length > 0 ? { secrets: secretIds } : {}),
    ...(provenance !== undefined ? { provenance } : {}),
    ...(sourceDateEpoch !== undefined ? { sourceDateEpoch } : {}),
  };
}

/**
 * Whether Kiln keeps its own copy of the build's provenance (and the build view links it): for a
 * tar output, where BuildKit writes it into the archive as `provenance.json`. An oci or docker
 * output carries it inside the image index as an attestation manifest.
 */
export function recordsProvenance(spec: Pick<BuildSpec, 'provenance' | 'output'>): boolean {
  return spec.provenance !== undefined && spec.output.type === 'tar';
}

/**
 * The `RUN --mount=type=cache` namespace of a project's builds: the same cache id in two projects
 * names two directories. Derived from the project, never from the caller (parseBuildSpec refuses
 * the arg).
 */
export function cacheMountNamespace(projectId: string): string {
  return `kiln-${projectId}`;
}

/**
 * A host name every RUN of a project's builds gets in its /etc/hosts (`add-hosts`), so that no
 * RUN step of one project is ever a cache hit of another's on a shared builder. BuildKit keys a
 * RUN on its extra hosts' names (it clears only their addresses), but not on what else can make
 * two projects' identical steps differ: since v0.13 not on a cache mount's id when the
 * Dockerfile names one (so not on the namespace either), and never on secrets or proxy args.
 * Without it, project A could fill its own cache mount with forged content, run the step
 * project B runs (B's public Dockerfile), and B's next build would get A's result.
 */
export function projectScopeHost(projectId: string): string {
  return `${cacheMountNamespace(projectId).toLowerCase()}.invalid`;
}

/**
 * The Dockerfile frontend's attributes for a project's build (what `docker build` sends for the
 * same flags, plus the project's cache mount namespace and scope host).
 */
export function frontendAttrsFor(spec: BuildSpec, projectId: string): Record<string, string> {
  const attrs: Record<string, string> = { filename: path.basename(spec.file) };
  if (spec.target) attrs.target = spec.target;
  if (spec.platform) attrs.platform = spec.platform;
  if (spec.noCache) attrs['no-cache'] = '';
  if (spec.network === 'none') attrs['force-network-mode'] = 'none';
  for (const [k, v] of Object.entries(spec.buildArgs)) attrs[`build-arg:${k}`] = v;
  for (const [k, v] of Object.entries(spec.labels)) attrs[`label:${k}`] = v;
  // What buildx sends for --provenance and --build-arg SOURCE_DATE_EPOCH (BuildKit ≥ 0.11/0.13).
  if (spec.provenance) attrs['attest:provenance'] = `mode=${spec.provenance}`;
  if (spec.sourceDateEpoch !== undefined) attrs['build-arg:SOURCE_DATE_EPOCH'] = String(spec.sourceDateEpoch);
  // Last, so it wins over a stored spec from before BUILDKIT_* args were refused.
  // BuildKit ≥ 0.6 reads it (dockerfile frontend 1.1.2); cache ids become `<ns>/<id>`.
  attrs['build-arg:BUILDKIT_CACHE_MOUNT_NS'] = cacheMountNamespace(projectId);
  // BuildKit ≥ 0.5 (`host=ip`, as buildx sends --add-host); a loopback address, as it means nothing.
  attrs['add-hosts'] = `${projectScopeHost(projectId)}=127.0.0.1`;
  return attrs;
}
