import { readFile, stat } from 'node:fs/promises';
import { resolve } from 'node:path';
import { InvalidArgumentError } from './errors.js';
import { parseCsvAttrs } from './output-spec.js';

/** BuildKit's limit on one secret (secretsprovider.MaxSecretSize). */
export const MAX_SECRET_SIZE = 500 * 1024;

/** Where one `--secret` comes from: a file, or an environment variable. */
export interface SecretSource {
  id: string;
  src?: string;
  env?: string;
}

/**
 * Parses a docker/buildctl `--secret` value: `id=x,src=FILE` (alias `source`), `id=x,env=VAR`,
 * `type=file|env` (with `type=env`, `src` names the variable), or just `id=x`, which
 * {@link loadSecrets} resolves like BuildKit: the variable `x` when set, else the file `x`.
 */
export function parseSecretSpec(spec: string): SecretSource {
  const source: Partial<SecretSource> = {};
  let type: string | undefined;
  for (const [key, value] of Object.entries(parseCsvAttrs(spec))) {
    if (key === 'type') {
      if (value !== 'file' && value !== 'env')
        throw new InvalidArgumentError(`unsupported secret type "${value}" in "${spec}"`);
      type = value;
    } else if (key === 'id') source.id = value;
    else if (key === 'src' || key === 'source') source.src = value;
    else if (key === 'env') source.env = value;
    else throw new InvalidArgumentError(`unexpected key "${key}" in secret "${spec}"`);
  }
  if (!source.id) throw new InvalidArgumentError(`secret "${spec}" is missing id=...`);
  if (type === 'env' && !source.env && source.src !== undefined) {
    source.env = source.src;
    delete source.src;
  }
  return source as SecretSource;
}

/**
 * Reads secret values (files are stat'ed for size before being read). A variable that is not
 * set leaves its secret out, so the build sees it as missing, as with docker. Errors name the
 * id and the file, never a value.
 */
export async function loadSecrets(
  sources: readonly SecretSource[],
  options: {
    env?: Readonly<Record<string, string | undefined>>;
    /** Base of relative file paths; default the process's working directory. */
    cwd?: string;
  } = {},
): Promise<Record<string, Buffer>> {
  const { env = process.env, cwd = process.cwd() } = options;
  const out: Record<string, Buffer> = {};
  for (const s of sources) {
    let { src, env: variable } = s;
    if (src === undefined && variable === undefined) {
      if (envValue(env, s.id) !== undefined) variable = s.id;
      else src = s.id;
    }
    const value =
      src !== undefined ? await readSecretFile(s.id, resolve(cwd, src)) : envValue(env, variable as string);
    if (value === undefined) continue;
    if (value.length > MAX_SECRET_SIZE) throw tooBig(s.id);
    Object.defineProperty(out, s.id, { value, enumerable: true, writable: true, configurable: true });
  }
  return out;
}

async function readSecretFile(id: string, file: string): Promise<Buffer> {
  try {
    if ((await stat(file)).size > MAX_SECRET_SIZE) throw tooBig(id);
    return await readFile(file);
  } catch (err) {
    if (err instanceof InvalidArgumentError) throw err;
    const reason = (err as NodeJS.ErrnoException).code ?? (err as Error).message;
    throw new InvalidArgumentError(`secret ${id}: cannot read ${file}: ${reason}`);
  }
}

function envValue(env: Readonly<Record<string, string | undefined>>, name: string): Buffer | undefined {
  const text = Object.hasOwn(env, name) ? env[name] : undefined;
  return text === undefined ? undefined : Buffer.from(text);
}

function tooBig(id: string): InvalidArgumentError {
  return new InvalidArgumentError(
    `secret ${id} is too big: at most ${MAX_SECRET_SIZE} bytes (BuildKit's limit)`,
  );
}
