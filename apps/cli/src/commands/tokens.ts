/** `kiln tokens ls|create|revoke`: the API tokens of the project kiln is logged in to. */
import { TOKEN_SCOPES, type TokenScope } from '@kiln/contract';
import { type NewToken, projectClient } from '../api.js';
import { exactPositionals, parseCommandLine, parseScope } from '../args.js';
import { EXIT_OK, UsageError } from '../errors.js';
import { formatAge, formatTable, textWriter } from '../format.js';
import type { Io } from '../io.js';

export const TOKENS_USAGE = `Usage: kiln tokens COMMAND

The API tokens of your project (needs a token of scope manage).

Commands:
  ls [--json]                          List the tokens, oldest first (never their secrets)
  create NAME [--scope SCOPE] [--json] Create a token; its secret is printed once
  revoke ID                            Revoke a token, at once

SCOPE: ${TOKEN_SCOPES.join(', ')} (each includes the ones before it); default and most: your own token's`;

const JSON_FLAG = { json: { type: 'boolean' }, help: { type: 'boolean', short: 'h' } } as const;

export interface TokenCreateArgs {
  name: string;
  scope: TokenScope | undefined;
  json: boolean;
}

export function parseTokenCreate(argv: string[]): TokenCreateArgs | 'help' {
  const { values, positionals } = parseCommandLine(
    argv,
    { ...JSON_FLAG, scope: { type: 'string' } },
    TOKENS_USAGE,
  );
  if (values.help) return 'help';
  const [name] = exactPositionals(positionals, ['NAME'], 'tokens create', TOKENS_USAGE);
  return { name, scope: parseScope(values.scope, TOKENS_USAGE), json: values.json ?? false };
}

/**
 * A new token: with --json the whole answer, else the secret alone on stdout (for `$(...)`) and
 * what it is on stderr, since the server keeps only its hash.
 */
export function printNewToken(token: NewToken, json: boolean, io: Io): void {
  if (json) {
    io.stdout.write(`${JSON.stringify(token, null, 2)}\n`);
    return;
  }
  io.stdout.write(`${token.token}\n`);
  io.stderr.write(
    `Token ${token.id} "${token.name}" (scope ${token.scope}) created. Save it now: it will not be shown again.\n`,
  );
}

async function ls(argv: string[], io: Io): Promise<number> {
  const { values, positionals } = parseCommandLine(argv, JSON_FLAG, TOKENS_USAGE);
  if (values.help) return help(io);
  exactPositionals(positionals, [], 'tokens ls', TOKENS_USAGE);
  const tokens = await (await projectClient(io.env)).listTokens();
  if (values.json) io.stdout.write(`${JSON.stringify(tokens, null, 2)}\n`);
  else {
    const rows = [['TOKEN ID', 'NAME', 'SCOPE', 'CREATED', 'REVOKED']];
    for (const t of tokens) {
      rows.push([t.id, t.name, t.scope, formatAge(t.createdAt), t.revokedAt ? formatAge(t.revokedAt) : '-']);
    }
    // Token names are any member's text: never terminal escapes on another's screen.
    textWriter(io.stdout)(formatTable(rows));
  }
  return EXIT_OK;
}

async function create(argv: string[], io: Io): Promise<number> {
  const args = parseTokenCreate(argv);
  if (args === 'help') return help(io);
  const token = await (await projectClient(io.env)).createToken({
    name: args.name,
    ...(args.scope ? { scope: args.scope } : {}),
  });
  printNewToken(token, args.json, io);
  return EXIT_OK;
}

async function revoke(argv: string[], io: Io): Promise<number> {
  const { values, positionals } = parseCommandLine(
    argv,
    { help: { type: 'boolean', short: 'h' } },
    TOKENS_USAGE,
  );
  if (values.help) return help(io);
  const [id] = exactPositionals(positionals, ['ID'], 'tokens revoke', TOKENS_USAGE);
  await (await projectClient(io.env)).revokeToken(id);
  io.stdout.write(`${id} revoked\n`);
  return EXIT_OK;
}

function help(io: Io): number {
  io.stdout.write(`${TOKENS_USAGE}\n`);
  return EXIT_OK;
}

export async function tokensCommand(argv: string[], io: Io): Promise<number> {
  const [sub, ...rest] = argv;
  switch (sub) {
    case 'ls':
    case 'list':
      return ls(rest, io);
    case 'create':
      return create(rest, io);
    case 'revoke':
    case 'rm':
      return revoke(rest, io);
    case '-h':
    case '--help':
    case 'help':
      return help(io);
    case undefined:
      throw new UsageError('"kiln tokens" requires a command', TOKENS_USAGE);
    default:
      throw new UsageError(`unknown command "kiln tokens ${sub}"`, TOKENS_USAGE);
  }
}
