/** Command lines, docker's way: node:util parseArgs, every mistake a UsageError (exit 2). */
import path from 'node:path';
import { type ParseArgsConfig, parseArgs } from 'node:util';
import { parseCsvAttrs, parseSecretSpec, type SecretSource } from '@kiln/buildkit-client/context';
import {
  ARTIFACT_NAME,
  BYTE_OUTPUT_TYPES,
  type ByteOutputType,
  reservedBuildArg,
  TOKEN_SCOPES,
  type TokenScope,
} from '@kiln/contract';
import { type ContextArg, parseContextArg } from './context-arg.js';
import { CliError, EXIT_USAGE, UsageError } from './errors.js';
import { PROGRESS_MODES, type ProgressMode } from './reporter.js';
import type { BuildRequest } from './upload.js';

export const BUILD_USAGE = `Usage: kiln build [OPTIONS] PATH | URL | -

Build on Kiln and write the result where --output says, like docker build --output. The
context is PATH (a directory), URL (a git repository: https://host/org/repo.git#ref:subdir,
git://host/repo#ref, git@host:org/repo.git, github.com/org/repo; Kiln fetches it) or - (stdin:
a tar, a gzip-compressed tar, or a Dockerfile alone with no context).

Options:
  -o, --output type=tar,dest=FILE   Where the result goes (also type=oci|docker; dest=- is stdout;
                                    type=image,name=REGISTRY/REPO:TAG,push=true pushes it and
                                    prints NAME@DIGEST)
  -f, --file FILE                   The Dockerfile (default PATH/Dockerfile; - reads stdin; in a
                                    git or stdin archive context, a path inside it)
      --target STAGE                Build this stage
      --build-arg KEY=VALUE         Build-time variable (KEY alone takes it from the environment)
      --platform OS/ARCH[,OS/ARCH]  Target platform(s), e.g. linux/arm64; several give one
                                    result with a directory per platform
      --network none|default        Network mode of RUN steps
      --no-cache                    Do not use the cache
      --label KEY=VALUE             Label of the result
      --provenance mode=min|max     SLSA provenance of the result (true: min); a tar output
                                    holds it as provenance.json (BuildKit >= 0.11 builders)
      --secret id=ID[,src=FILE|,env=VAR]
                                    Secret for RUN --mount=type=secret (id alone: the variable
                                    ID when set, else the file ID), sent to Kiln, never stored
      --progress auto|plain|tty|json|quiet
                                    How to show progress (default auto: a live view on a terminal)
  -q, --quiet                       Same as --progress quiet
  -h, --help                        This help`;

export interface OutputArg {
  /**
   * The outputs that download as one file, or `image` (pushed to a registry, nothing to
   * download); local (a directory) is refused for now.
   */
  type: ByteOutputType | 'image';
  /** Local path, or `-` for stdout; empty for an image. */
  dest: string;
  /** Other exporter attributes, passed to the server. */
  attrs: Record<string, string>;
}

export interface BuildOptions {
  context: ContextArg;
  file: string | undefined;
  output: OutputArg;
  target: string | undefined;
  buildArgs: Record<string, string>;
  platform: string | undefined;
  network: 'none' | 'default' | undefined;
  noCache: boolean;
  labels: Record<string, string>;
  /** buildx's --provenance value, passed to the server, which validates it. */
  provenance: string | undefined;
  /** Read when the build starts (loadSecrets), not while parsing. */
  secrets: SecretSource[];
  progress: ProgressMode;
}

type OptionsConfig = NonNullable<ParseArgsConfig['options']>;
type Parsed<T extends OptionsConfig> = ReturnType<
  typeof parseArgs<{ args: string[]; options: T; allowPositionals: true; strict: true }>
>;

/** parseArgs with its errors turned into UsageErrors carrying `usage`. */
const GO_TRUE = new Set(['1', 't', 'T', 'TRUE', 'true', 'True']);
const GO_FALSE = new Set(['0', 'f', 'F', 'FALSE', 'false', 'False']);

/**
 * docker's flags take `--no-cache=true` and `--no-cache=false` (Go's ParseBool spellings; the
 * last one given wins), which node's parseArgs refuses: rewritten to the bare flag, or to none.
 */
function goBooleans(argv: string[], options: OptionsConfig, usage: string): string[] {
  const end = argv.indexOf('--');
  let kept: string[] = [];
  for (const arg of end === -1 ? argv : argv.slice(0, end)) {
    const match = /^--([^=]+)=(.*)$/s.exec(arg);
    const name = match?.[1];
    const value = match?.[2];
    if (name === undefined || value === undefined || options[name]?.type !== 'boolean') {
      kept.push(arg);
    } else if (GO_TRUE.has(value)) {
      kept.push(`--${name}`);
    } else if (GO_FALSE.has(value)) {
      const short = options[name]?.short;
      kept = kept.filter((a) => a !== `--${name}` && (short === undefined || a !== `-${short}`));
    } else {
      throw new UsageError(`invalid argument "${value}" for "--${name}": true or false`, usage);
    }
  }
  return end === -1 ? kept : [...kept, ...argv.slice(end)];
}

export function parseCommandLine<T extends OptionsConfig>(
  argv: string[],
  options: T,
  usage: string,
): Parsed<T> {
  const args = goBooleans(argv, options, usage);
  try {
    return parseArgs({ args, options, allowPositionals: true, strict: true });
  } catch (err) {
    if (String((err as NodeJS.ErrnoException).code ?? '').startsWith('ERR_PARSE_ARGS')) {
      throw new UsageError(
        (err as Error).message.replace(/\. To specify a positional argument.*$/s, ''),
        usage,
      );
    }
    throw err;
  }
}

const BUILD_OPTIONS = {
  output: { type: 'string', short: 'o', multiple: true },
  file: { type: 'string', short: 'f' },
  target: { type: 'string' },
  'build-arg': { type: 'string', multiple: true },
  platform: { type: 'string', multiple: true },
  network: { type: 'string' },
  'no-cache': { type: 'boolean' },
  label: { type: 'string', multiple: true },
  provenance: { type: 'string' },
  progress: { type: 'string' },
  quiet: { type: 'boolean', short: 'q' },
  secret: { type: 'string', multiple: true },
  ssh: { type: 'string', multiple: true },
  help: { type: 'boolean', short: 'h' },
} as const;

/** `type=tar,dest=app.tar`, `-` (tar to stdout) or a bare path (docker: a local directory). */
export function parseOutput(value: string, stdoutIsTTY: boolean): OutputArg {
  let attrs: Record<string, string>;
  if (value === '-') attrs = { type: 'tar', dest: '-' };
  else if (!value.includes('=')) attrs = { type: 'local', dest: value };
  else {
    try {
      attrs = parseCsvAttrs(value);
    } catch (err) {
      throw new UsageError(`invalid --output "${value}": ${(err as Error).message}`, BUILD_USAGE);
    }
  }
  const { type, dest, ...rest } = attrs;
  if (!type)
    throw new UsageError(`--output "${value}": type is required, e.g. type=tar,dest=app.tar`, BUILD_USAGE);
  if (type === 'local') {
    throw new UsageError(
      `--output type=local (a directory${dest ? `, ${dest}` : ''}) is not supported by kiln yet: use type=tar,dest=${dest && dest !== '-' ? `${dest}.tar` : 'app.tar'}`,
      BUILD_USAGE,
    );
  }
  if (type === 'image') {
    // The server checks name and push=true; dest names nothing for an image.
    if (dest !== undefined)
      throw new UsageError('--output type=image takes no dest: it is pushed to name=', BUILD_USAGE);
    return { type, dest: '', attrs: rest };
  }
  const byteType = BYTE_OUTPUT_TYPES.find((t) => t === type);
  if (byteType === undefined) {
    throw new UsageError(
      `--output type=${type} is not supported by kiln: use one of ${[...BYTE_OUTPUT_TYPES, 'image'].join(', ')}`,
      BUILD_USAGE,
    );
  }
  let target = dest;
  if (target === undefined || target === '' || target === '-') {
    // A tarball on a terminal is noise at best, as buildx says; `-` asks for it no more than nothing.
    if (stdoutIsTTY) {
      throw new UsageError(
        `dest file is required for ${type} exporter. refusing to write to console (e.g. --output type=${type},dest=app.tar)`,
        BUILD_USAGE,
      );
    }
    target = '-';
  }
  return { type: byteType, dest: target, attrs: rest };
}

function buildArgs(
  values: readonly string[] | undefined,
  env: Readonly<Record<string, string | undefined>>,
): Record<string, string> {
  // docker: `--build-arg KEY` takes the value from the environment, or is dropped when unset.
  const args = pairs(values, '--build-arg', (k) => env[k]);
  for (const name of Object.keys(args)) {
    const reserved = reservedBuildArg(name);
    if (reserved) throw new UsageError(`--build-arg: ${reserved}`, BUILD_USAGE);
  }
  return args;
}

function pairs(
  values: readonly string[] | undefined,
  flag: string,
  missing: (key: string) => string | undefined,
): Record<string, string> {
  const out: Record<string, string> = {};
  for (const v of values ?? []) {
    const eq = v.indexOf('=');
    const key = eq === -1 ? v : v.slice(0, eq);
    if (key === '') throw new UsageError(`${flag} "${v}": expected KEY=VALUE`, BUILD_USAGE);
    const value = eq === -1 ? missing(key) : v.slice(eq + 1);
    if (value !== undefined) out[key] = value;
  }
  return out;
}

export function parseBuildOptions(
  argv: string[],
  env: Readonly<Record<string, string | undefined>>,
  stdoutIsTTY: boolean,
): BuildOptions | 'help' {
  const { values, positionals } = parseCommandLine(argv, BUILD_OPTIONS, BUILD_USAGE);
  if (values.help) return 'help';
  if (values.ssh?.length) {
    throw new CliError('--ssh is not supported yet: kiln cannot forward SSH agents to builds', EXIT_USAGE);
  }
  if (positionals.length !== 1) {
    throw new UsageError(
      `"kiln build" requires exactly 1 argument (the context: a directory, a git URL or -)`,
      BUILD_USAGE,
    );
  }
  const context = parseContextArg(positionals[0] as string);
  if (values.file === '-' && context.kind !== 'dir') {
    throw new UsageError(
      context.kind === 'stdin'
        ? 'stdin cannot be both the build context and the Dockerfile (-f -)'
        : `-f - cannot be used with a git context: the Dockerfile comes from the repository (-f names a path in it)`,
      BUILD_USAGE,
    );
  }

  const outputs = values.output ?? [];
  if (outputs.length === 0) {
    throw new UsageError('kiln build needs --output, e.g. --output type=tar,dest=app.tar', BUILD_USAGE);
  }
  if (outputs.length > 1) throw new UsageError('only one --output is supported', BUILD_USAGE);
  const output = parseOutput(outputs[0] as string, stdoutIsTTY);

  const progress = values.quiet ? 'quiet' : (values.progress ?? 'auto');
  if (!PROGRESS_MODES.includes(progress as ProgressMode)) {
    throw new UsageError(`--progress "${progress}": use one of ${PROGRESS_MODES.join(', ')}`, BUILD_USAGE);
  }
  const network = values.network;
  if (network !== undefined && network !== 'none' && network !== 'default') {
    throw new UsageError(`--network "${network}" is not supported by kiln: use none or default`, BUILD_USAGE);
  }
  // Repeated, as buildx takes it: every value counts, not only the last.
  const platform = values.platform?.join(',');
  if (platform?.split(',').includes('')) {
    throw new UsageError(`--platform "${platform}" has an empty platform`, BUILD_USAGE);
  }
  if (values.file === '' || values.target === '') {
    throw new UsageError(`${values.file === '' ? '--file' : '--target'} must not be empty`, BUILD_USAGE);
  }
  return {
    context,
    file: values.file,
    output,
    target: values.target,
    buildArgs: buildArgs(values['build-arg'], env),
    platform,
    network,
    noCache: values['no-cache'] ?? false,
    labels: pairs(values.label, '--label', () => ''),
    provenance: values.provenance,
    secrets: (values.secret ?? []).map((v) => {
      try {
        return parseSecretSpec(v);
      } catch (err) {
        throw new UsageError(`invalid --secret "${v}": ${(err as Error).message}`, BUILD_USAGE);
      }
    }),
    progress: progress as ProgressMode,
  };
}

/** The build's spec as the server takes it, but for `file`, which the context decides. */
export function buildSpec(opts: BuildOptions): Omit<BuildRequest, 'file'> {
  return {
    output: {
      type: opts.output.type,
      dest: serverDest(opts.output.dest, opts.output.type),
      attrs: opts.output.attrs,
    },
    target: opts.target,
    platform: opts.platform,
    network: opts.network,
    noCache: opts.noCache,
    provenance: opts.provenance,
    buildArgs: opts.buildArgs,
    labels: opts.labels,
  };
}

/** The artifact name the server stores: dest's base name, reduced to what the API accepts. */
export function serverDest(dest: string, type: string): string {
  const fallback = type === 'tar' ? 'output.tar' : `image-${type}.tar`;
  const name = path.basename(dest);
  if (dest === '-' || name === '.' || name === '..') return fallback;
  const base = name
    .replace(/[^A-Za-z0-9._-]/g, '_')
    .replace(/^[.-]/, '_')
    .slice(0, 255);
  return ARTIFACT_NAME.test(base) ? base : fallback;
}

/** The positionals of a subcommand that takes exactly `names`, e.g. ['NAME', 'TOKEN_NAME']. */
export function exactPositionals<const N extends readonly string[]>(
  positionals: string[],
  names: N,
  command: string,
  usage: string,
): { [K in keyof N]: string } {
  if (positionals.length !== names.length) {
    const what =
      names.length === 0
        ? 'takes no arguments'
        : `requires exactly ${names.length} argument${names.length > 1 ? 's' : ''} (${names.join(' ')})`;
    throw new UsageError(`"kiln ${command}" ${what}`, usage);
  }
  return positionals as { [K in keyof N]: string };
}

export function parseScope(value: string | undefined, usage: string): TokenScope | undefined {
  if (value === undefined) return undefined;
  const scope = TOKEN_SCOPES.find((s) => s === value);
  if (!scope) throw new UsageError(`--scope "${value}": use one of ${TOKEN_SCOPES.join(', ')}`, usage);
  return scope;
}

/** A quota flag's value: a whole number, or `default` (null: the server's configured default) where allowed. */
export function parseQuota(flag: string, value: string, usage: string, allowDefault: boolean): number | null {
  if (allowDefault && value === 'default') return null;
  if (/^\d+$/.test(value) && Number.isSafeInteger(Number(value))) return Number(value);
  throw new UsageError(`--${flag} "${value}": a whole number${allowDefault ? ' or default' : ''}`, usage);
}
