/** `kiln login --url URL --token-stdin`: checks the token against the server, then saves both. */
import { KilnApi } from '../api.js';
import { parseCommandLine } from '../args.js';
import { checkToken, normalizeUrl, saveConfig } from '../config.js';
import { CliError, EXIT_OK, UsageError } from '../errors.js';
import { type Io, readAll } from '../io.js';

export const LOGIN_USAGE = `Usage: kiln login --url URL (--token-stdin | --token TOKEN)

Check the token against Kiln at URL and save both to $XDG_CONFIG_HOME/kiln/config.json
(~/.config/kiln/config.json), readable by you only. KILN_URL and KILN_TOKEN override it.
--token-stdin reads the token from standard input; --token puts it where the process list and
the shell's history show it.`;

export async function loginCommand(argv: string[], io: Io): Promise<number> {
  const { values, positionals } = parseCommandLine(
    argv,
    {
      url: { type: 'string' },
      token: { type: 'string' },
      'token-stdin': { type: 'boolean' },
      help: { type: 'boolean', short: 'h' },
    },
    LOGIN_USAGE,
  );
  if (values.help) {
    io.stdout.write(`${LOGIN_USAGE}\n`);
    return EXIT_OK;
  }
  if (positionals.length > 0) throw new UsageError('"kiln login" takes no arguments', LOGIN_USAGE);
  const rawUrl = values.url ?? io.env.KILN_URL;
  if (!rawUrl) throw new UsageError('--url is required', LOGIN_USAGE);
  if (values.token !== undefined && values['token-stdin']) {
    throw new UsageError('--token and --token-stdin cannot be used together', LOGIN_USAGE);
  }
  const token = values['token-stdin'] ? (await readAll(io.stdin)).toString('utf8').trim() : values.token;
  if (!token) throw new UsageError('--token (or --token-stdin) is required', LOGIN_USAGE);
  const url = loginUrl(values.url, rawUrl);
  const checked = checkToken(token, values['token-stdin'] ? 'the token on stdin' : '--token');
  // An authenticated request that changes nothing: a bad token is a 401 here, not on the first build.
  await new KilnApi(url, checked, (err) =>
    err.code === 'unauthorized'
      ? `hint: Kiln at ${url} refused this token: make one with kiln tokens create, or ask the operator (kiln projects token)`
      : undefined,
  ).listBuilds({ limit: 1 });
  const file = await saveConfig(io.env, { url, token: checked });
  io.stdout.write(`Login Succeeded: ${url} (saved to ${file})\n`);
  return EXIT_OK;
}

/** A bad --url is a usage error (exit 2); a bad KILN_URL is the environment's, named as such. */
function loginUrl(flag: string | undefined, raw: string): string {
  if (flag === undefined) return normalizeUrl(raw, 'KILN_URL');
  try {
    return normalizeUrl(raw, '--url');
  } catch (err) {
    throw err instanceof CliError ? new UsageError(err.message) : err;
  }
}
