/**
 * Where the CLI finds Kiln: `$XDG_CONFIG_HOME/kiln/config.json` (default `~/.config/kiln/`),
 * written by `kiln login` with mode 0600; `KILN_URL` and `KILN_TOKEN` override it.
 */
import { randomBytes } from 'node:crypto';
import { chmod, mkdir, readFile, rename, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { CliError, EXIT_AUTH } from './errors.js';

export const DEFAULT_URL = 'http://127.0.0.1:8080';

export interface CliConfig {
  url: string;
  token: string | undefined;
  /** Where the values came from, for messages. */
  source: { url: 'env' | 'file' | 'default'; token: 'env' | 'file' | 'none' };
}

interface StoredConfig {
  url?: string;
  token?: string;
}

type Env = Readonly<Record<string, string | undefined>>;

export function configPath(env: Env): string {
  const xdg = env.XDG_CONFIG_HOME;
  const base = xdg && path.isAbsolute(xdg) ? xdg : path.join(env.HOME || os.homedir(), '.config');
  return path.join(base, 'kiln', 'config.json');
}

/**
 * A server URL without trailing slashes; only http(s), without credentials, query or fragment.
 * Paths are appended to it, and it is printed in messages and kept in the context cache: a
 * password in it would be shown and stored (Kiln takes the token, never URL credentials), and a
 * query or fragment would swallow every path appended after it.
 */
export function normalizeUrl(raw: string, what = 'the Kiln URL'): string {
  // Up to the last @: a password may hold / ? or # unescaped, and then no parser finds it.
  const shown = raw.replace(/\/\/.*@/, '//***@');
  let url: URL;
  try {
    url = new URL(raw);
  } catch {
    throw new CliError(`${what} "${shown}" is not a URL (e.g. http://127.0.0.1:8080)`);
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') {
    throw new CliError(`${what} "${shown}" must be http:// or https://`);
  }
  if (url.username || url.password) {
    throw new CliError(
      `${what} "${shown}" holds a user name or password: Kiln authenticates with the token (kiln login, KILN_TOKEN)`,
    );
  }
  if (url.search || url.hash || raw.includes('?') || raw.includes('#')) {
    throw new CliError(`${what} "${shown}" has a query or fragment: give the server's address only`);
  }
  return url.toString().replace(/\/+$/, '');
}

/**
 * The token as it goes into the Authorization header, checked first: a token pasted with a line
 * break, or two of them in one variable, would otherwise fail inside the HTTP client and read as
 * an unreachable server. Surrounding whitespace (a CRLF file's `\r`) is dropped. The message
 * names where the token came from, never the token.
 */
export function checkToken(token: string, source: string, hint?: string): string {
  const value = token.trim();
  const bad = /[^\x21-\x7e]/.exec(value);
  if (bad) {
    const c = bad[0];
    const what =
      c === '\n' || c === '\r'
        ? 'a line break'
        : c === ' ' || c === '\t'
          ? 'whitespace'
          : c < ' ' || c === '\x7f'
            ? 'a control character'
            : 'a character outside ASCII';
    throw new CliError(
      `${source} is not a Kiln token: it contains ${what} at character ${bad.index + 1} (a token is one word of printable ASCII)`,
      EXIT_AUTH,
      'invalid_token',
      hint,
    );
  }
  return value;
}

async function readStored(file: string): Promise<StoredConfig> {
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return {};
    throw new CliError(`cannot read ${file}: ${(err as Error).message}`);
  }
  try {
    const value = JSON.parse(text) as unknown;
    if (typeof value !== 'object' || value === null || Array.isArray(value)) throw new Error('not an object');
    const { url, token } = value as Record<string, unknown>;
    return {
      ...(typeof url === 'string' ? { url } : {}),
      ...(typeof token === 'string' ? { token } : {}),
    };
  } catch (err) {
    // JSON.parse's message quotes the text around the error, and this file holds the token.
    const why = err instanceof SyntaxError ? 'not JSON' : (err as Error).message;
    throw new CliError(`${file} is not a valid config file (${why}): run kiln login again`);
  }
}

export async function loadConfig(env: Env): Promise<CliConfig> {
  const stored = await readStored(configPath(env));
  const envUrl = env.KILN_URL || undefined;
  const envToken = env.KILN_TOKEN || undefined;
  const url = envUrl ?? stored.url;
  const token = envToken ?? stored.token;
  return {
    url: normalizeUrl(
      url ?? DEFAULT_URL,
      envUrl ? 'KILN_URL' : `the Kiln URL in ${configPath(env)} (kiln login --url replaces it)`,
    ),
    token,
    source: {
      url: envUrl ? 'env' : stored.url ? 'file' : 'default',
      token: envToken ? 'env' : stored.token ? 'file' : 'none',
    },
  };
}

/** Writes the config readable by its owner only, replacing the old one atomically. */
export async function saveConfig(env: Env, config: { url: string; token: string }): Promise<string> {
  const file = configPath(env);
  await mkdir(path.dirname(file), { recursive: true, mode: 0o700 });
  const tmp = `${file}.${randomBytes(6).toString('hex')}.tmp`;
  try {
    await writeFile(tmp, `${JSON.stringify({ url: config.url, token: config.token }, null, 2)}\n`, {
      mode: 0o600,
      flag: 'wx',
    });
    await chmod(tmp, 0o600);
    await rename(tmp, file);
  } catch (err) {
    await rm(tmp, { force: true });
    throw new CliError(`cannot write ${file}: ${(err as Error).message}`);
  }
  return file;
}
