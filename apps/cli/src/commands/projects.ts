/** `kiln projects ls|create|show|set|token`: the operator's commands, with KILN_OPERATOR_TOKEN. */
import { TOKEN_SCOPES, type TokenScope } from '@kiln/contract';
import type { ProjectQuotas, ProjectView, QuotaChange } from '../api.js';
import { exactPositionals, parseCommandLine, parseQuota, parseScope } from '../args.js';
import { EXIT_OK, UsageError } from '../errors.js';
import { formatAge, formatBytes, formatFields, formatTable, textWriter } from '../format.js';
import type { Io } from '../io.js';
import { operatorClient } from '../operator.js';
import { printNewToken } from './tokens.js';

export const PROJECTS_USAGE = `Usage: kiln projects COMMAND [--operator-token TOKEN]

Projects and their quotas, for Kiln's operator: needs the server's KILN_OPERATOR_TOKEN, from
--operator-token or the environment (never saved by kiln login). PROJECT is a name or an ID.

Commands:
  ls [--json]                                  List every project, oldest first
  create NAME [QUOTAS] [--json]                Create a project
  show PROJECT [--json]                        A project, its own quotas and those in effect
  set PROJECT [QUOTAS] [--disable|--enable] [--json]
                                               Change quotas (N|default), disable or enable it
  token PROJECT TOKEN_NAME [--scope SCOPE] [--json]
                                               Create a token of the project (default scope
                                               manage); its secret is printed once

QUOTAS (unset: the server's default):
  --max-queued N                Queued builds at a time
  --max-running N               Running builds at a time
  --max-artifact-bytes N        Bytes of a build's result
  --max-log-bytes N             Bytes of a build's log (at least 65536)
  --max-stored-bytes N          Bytes of contexts and artifacts kept (a shared one counts in full)

SCOPE: ${TOKEN_SCOPES.join(', ')}`;

const COMMON = {
  'operator-token': { type: 'string' },
  json: { type: 'boolean' },
  help: { type: 'boolean', short: 'h' },
} as const;

/** Each quota flag and the field of the API's quotas it sets. */
const QUOTA_FLAGS = {
  'max-queued': 'queuedBuilds',
  'max-running': 'runningBuilds',
  'max-artifact-bytes': 'artifactBytes',
  'max-log-bytes': 'logBytes',
  'max-stored-bytes': 'storedBytes',
} as const satisfies Record<string, keyof ProjectQuotas>;
const QUOTA_OPTIONS = {
  'max-queued': { type: 'string' },
  'max-running': { type: 'string' },
  'max-artifact-bytes': { type: 'string' },
  'max-log-bytes': { type: 'string' },
  'max-stored-bytes': { type: 'string' },
} as const;

interface Common {
  operatorToken: string | undefined;
  json: boolean;
}

export type ProjectsArgs =
  | ({ command: 'ls' } & Common)
  | ({ command: 'create'; name: string; quotas: QuotaChange } & Common)
  | ({ command: 'show'; project: string } & Common)
  | ({ command: 'set'; project: string; change: { disabled?: boolean; quotas?: QuotaChange } } & Common)
  | ({ command: 'token'; project: string; name: string; scope: TokenScope | undefined } & Common)
  | { command: 'help' };

function quotaChange(values: Partial<Record<keyof typeof QUOTA_FLAGS, string>>, allowDefault: boolean) {
  const quotas: QuotaChange = {};
  for (const [flag, field] of Object.entries(QUOTA_FLAGS) as [
    keyof typeof QUOTA_FLAGS,
    keyof ProjectQuotas,
  ][]) {
    const value = values[flag];
    if (value !== undefined) quotas[field] = parseQuota(flag, value, PROJECTS_USAGE, allowDefault);
  }
  return quotas;
}

/** `kiln projects ...`'s command line, checked before anything is sent. */
export function parseProjects(argv: string[]): ProjectsArgs {
  const [sub, ...rest] = argv;
  const parse = <T extends Parameters<typeof parseCommandLine>[1]>(extra: T) =>
    parseCommandLine(rest, { ...COMMON, ...extra }, PROJECTS_USAGE);
  const common = (values: { 'operator-token'?: string | undefined; json?: boolean | undefined }) => ({
    operatorToken: values['operator-token'],
    json: values.json ?? false,
  });
  switch (sub) {
    case 'ls':
    case 'list': {
      const { values, positionals } = parse({});
      if (values.help) return { command: 'help' };
      exactPositionals(positionals, [], 'projects ls', PROJECTS_USAGE);
      return { command: 'ls', ...common(values) };
    }
    case 'create': {
      const { values, positionals } = parse(QUOTA_OPTIONS);
      if (values.help) return { command: 'help' };
      const [name] = exactPositionals(positionals, ['NAME'], 'projects create', PROJECTS_USAGE);
      return { command: 'create', name, quotas: quotaChange(values, false), ...common(values) };
    }
    case 'show':
    case 'inspect': {
      const { values, positionals } = parse({});
      if (values.help) return { command: 'help' };
      const [project] = exactPositionals(positionals, ['PROJECT'], 'projects show', PROJECTS_USAGE);
      return { command: 'show', project, ...common(values) };
    }
    case 'set': {
      const { values, positionals } = parse({
        ...QUOTA_OPTIONS,
        disable: { type: 'boolean' },
        enable: { type: 'boolean' },
      });
      if (values.help) return { command: 'help' };
      const [project] = exactPositionals(positionals, ['PROJECT'], 'projects set', PROJECTS_USAGE);
      if (values.disable && values.enable) {
        throw new UsageError('--disable and --enable cannot be used together', PROJECTS_USAGE);
      }
      const quotas = quotaChange(values, true);
      const change = {
        ...(values.disable || values.enable ? { disabled: Boolean(values.disable) } : {}),
        ...(Object.keys(quotas).length > 0 ? { quotas } : {}),
      };
      if (Object.keys(change).length === 0) {
        throw new UsageError(
          '"kiln projects set" needs something to change: a quota flag, --disable or --enable',
          PROJECTS_USAGE,
        );
      }
      return { command: 'set', project, change, ...common(values) };
    }
    case 'token': {
      const { values, positionals } = parse({ scope: { type: 'string' } });
      if (values.help) return { command: 'help' };
      const [project, name] = exactPositionals(
        positionals,
        ['PROJECT', 'TOKEN_NAME'],
        'projects token',
        PROJECTS_USAGE,
      );
      return {
        command: 'token',
        project,
        name,
        scope: parseScope(values.scope, PROJECTS_USAGE),
        ...common(values),
      };
    }
    case '-h':
    case '--help':
    case 'help':
      return { command: 'help' };
    case undefined:
      throw new UsageError('"kiln projects" requires a command', PROJECTS_USAGE);
    default:
      throw new UsageError(`unknown command "kiln projects ${sub}"`, PROJECTS_USAGE);
  }
}

/** A quota in effect, marked when it is the server's default rather than the project's own. */
function quota(p: ProjectView, field: keyof ProjectQuotas, show: (n: number) => string = String): string {
  return `${show(p.effectiveQuotas[field])}${p.quotas[field] === null ? ' (default)' : ''}`;
}

const bytes = (n: number) => `${formatBytes(n)} (${n} bytes)`;

function describe(p: ProjectView): string {
  return formatFields([
    ['ID', p.id],
    ['Name', p.name],
    ['Status', p.disabledAt ? 'disabled' : 'active'],
    ['Created', p.createdAt],
    ['Disabled', p.disabledAt ?? undefined],
    ['Max queued builds', quota(p, 'queuedBuilds')],
    ['Max running builds', quota(p, 'runningBuilds')],
    ['Max artifact size', quota(p, 'artifactBytes', bytes)],
    ['Max log size', quota(p, 'logBytes', bytes)],
    ['Stored', bytes(p.usage.storedBytes)],
    ['Max stored', quota(p, 'storedBytes', bytes)],
  ]);
}

function table(projects: ProjectView[]): string {
  const rows = [
    ['PROJECT ID', 'NAME', 'STATUS', 'CREATED', 'MAX QUEUED', 'MAX RUNNING', 'MAX ARTIFACT', 'STORED'],
  ];
  for (const p of projects) {
    rows.push([
      p.id,
      p.name,
      p.disabledAt ? 'disabled' : 'active',
      formatAge(p.createdAt),
      String(p.effectiveQuotas.queuedBuilds),
      String(p.effectiveQuotas.runningBuilds),
      formatBytes(p.effectiveQuotas.artifactBytes),
      `${formatBytes(p.usage.storedBytes)} / ${formatBytes(p.effectiveQuotas.storedBytes)}`,
    ]);
  }
  return formatTable(rows);
}

export async function projectsCommand(argv: string[], io: Io): Promise<number> {
  const args = parseProjects(argv);
  if (args.command === 'help') {
    io.stdout.write(`${PROJECTS_USAGE}\n`);
    return EXIT_OK;
  }
  const api = await operatorClient(args.operatorToken, io.env);
  const print = <T>(value: T, text: (v: T) => string) =>
    args.json ? io.stdout.write(`${JSON.stringify(value, null, 2)}\n`) : textWriter(io.stdout)(text(value));
  switch (args.command) {
    case 'ls':
      print(await api.listProjects(), table);
      break;
    case 'create':
      print(
        await api.createProject({
          name: args.name,
          ...(Object.keys(args.quotas).length > 0 ? { quotas: args.quotas } : {}),
        }),
        describe,
      );
      break;
    case 'show':
      print(await api.getProject(args.project), describe);
      break;
    case 'set':
      print(await api.updateProject(args.project, args.change), describe);
      break;
    case 'token':
      printNewToken(
        await api.createProjectToken(args.project, {
          name: args.name,
          ...(args.scope ? { scope: args.scope } : {}),
        }),
        args.json,
        io,
      );
      break;
  }
  return EXIT_OK;
}
