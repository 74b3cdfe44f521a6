/** `kiln builds ls|show|logs|cancel`. */
import { pipeline } from 'node:stream/promises';
import { BUILD_STATUSES, FINAL_STATUSES } from '@kiln/contract';
import { type BuildView, projectClient, segment } from '../api.js';
import { parseCommandLine } from '../args.js';
import { CliError, EXIT_OK, EXIT_UNAVAILABLE, interruptionOf, UsageError } from '../errors.js';
import { followLogs, waitForFinal } from '../follow.js';
import {
  formatAge,
  formatBytes,
  formatDuration,
  formatFields,
  formatTable,
  printable,
  textWriter,
} from '../format.js';
import type { Io } from '../io.js';

export const BUILDS_USAGE = `Usage: kiln builds COMMAND

Commands:
  ls [--status STATUS] [--limit N] [--all] [-q] [--json]   List builds, newest first
  show ID [--json]                                          One build, with its download URL when done
  logs ID [-f]                                              A build's log (-f: follow it live)
  cancel ID [--wait]                                        Cancel a queued or running build

STATUS: ${BUILD_STATUSES.join(', ')}`;

const ID = /^[0-9A-Za-z]{1,64}$/;

function oneId(positionals: string[], command: string): string {
  if (positionals.length !== 1)
    throw new UsageError(`"kiln builds ${command}" requires exactly 1 argument (a build ID)`, BUILDS_USAGE);
  const id = positionals[0] as string;
  if (!ID.test(id)) throw new UsageError(`"${id}" is not a build ID`, BUILDS_USAGE);
  return id;
}

function duration(b: BuildView): string {
  if (!b.startedAt) return '-';
  const end = b.finishedAt ? Date.parse(b.finishedAt) : Date.now();
  return formatDuration(end - Date.parse(b.startedAt));
}

async function ls(argv: string[], io: Io): Promise<number> {
  const { values, positionals } = parseCommandLine(
    argv,
    {
      status: { type: 'string' },
      limit: { type: 'string' },
      all: { type: 'boolean', short: 'a' },
      quiet: { type: 'boolean', short: 'q' },
      json: { type: 'boolean' },
      help: { type: 'boolean', short: 'h' },
    },
    BUILDS_USAGE,
  );
  if (values.help) return help(io);
  if (positionals.length > 0) throw new UsageError(`"kiln builds ls" takes no arguments`, BUILDS_USAGE);
  if (values.status !== undefined && !BUILD_STATUSES.some((s) => s === values.status)) {
    throw new UsageError(
      `--status "${values.status}": use one of ${BUILD_STATUSES.join(', ')}`,
      BUILDS_USAGE,
    );
  }
  // Digits only: Number() would also take "1e1", "0x10" and " 5".
  const limit =
    values.limit === undefined ? 20 : /^\d+$/.test(values.limit) ? Number(values.limit) : Number.NaN;
  if (!Number.isInteger(limit) || limit < 1 || limit > 100) {
    throw new UsageError(`--limit "${values.limit}": a number from 1 to 100`, BUILDS_USAGE);
  }
  const api = await projectClient(io.env);
  const items: BuildView[] = [];
  let cursor: string | undefined;
  const seen = new Set<string>();
  do {
    const page = await api.listBuilds({
      ...(values.status ? { status: values.status } : {}),
      ...(cursor ? { cursor } : {}),
      limit,
    });
    items.push(...page.items);
    cursor = page.nextCursor ?? undefined;
    // A cursor that comes back would page for ever: the server's fault, said so.
    if (cursor !== undefined && seen.has(cursor)) {
      throw new CliError(
        `Kiln at ${api.baseUrl} gave the build list's cursor ${printable(cursor)} again: stopped paging`,
        EXIT_UNAVAILABLE,
        'bad_answer',
      );
    }
    if (cursor !== undefined) seen.add(cursor);
  } while (values.all && cursor);

  if (values.json) io.stdout.write(`${JSON.stringify(items, null, 2)}\n`);
  else if (values.quiet) textWriter(io.stdout)(items.map((b) => `${b.id}\n`).join(''));
  else {
    const rows = [['BUILD ID', 'STATUS', 'CREATED', 'DURATION', 'OUTPUT', 'SIZE']];
    for (const b of items) {
      rows.push([
        b.id,
        b.status,
        formatAge(b.createdAt),
        duration(b),
        b.spec.output ? `${b.spec.output.type ?? 'tar'}:${b.spec.output.dest ?? ''}` : '-',
        b.artifact ? formatBytes(b.artifact.size) : '-',
      ]);
    }
    textWriter(io.stdout)(formatTable(rows));
  }
  return EXIT_OK;
}

function describe(b: BuildView): string {
  const rows: [string, string | undefined][] = [
    ['ID', b.id],
    ['Status', b.status],
    ['Created', b.createdAt],
    ['Started', b.startedAt ?? undefined],
    ['Finished', b.finishedAt ?? undefined],
    ['Duration', b.startedAt ? duration(b) : undefined],
    ['Builder', b.builder ?? undefined],
    ['Attempts', String(b.attempts)],
    [
      'Context',
      b.context
        ? `${b.context.digest} (${formatBytes(b.context.size)})`
        : b.git
          ? `${b.git.url}${b.git.commit ? ` @ ${b.git.commit}` : b.git.ref ? `#${b.git.ref}` : ''}`
          : undefined,
    ],
    ['Dockerfile', b.spec.file],
    ['Target', b.spec.target],
    ['Platform', b.spec.platform],
    ['Network', b.spec.network],
    ['No cache', b.spec.noCache ? 'true' : undefined],
    [
      'Output',
      b.spec.output ? `type=${b.spec.output.type ?? 'tar'},dest=${b.spec.output.dest ?? ''}` : undefined,
    ],
  ];
  for (const [k, v] of Object.entries(b.spec.buildArgs ?? {})) rows.push(['Build arg', `${k}=${v}`]);
  for (const [k, v] of Object.entries(b.spec.labels ?? {})) rows.push(['Label', `${k}=${v}`]);
  if (b.error) rows.push(['Error', `${b.error.message} (${b.error.code})`]);
  if (b.artifact) {
    rows.push(
      ['Artifact', `${b.artifact.filename} (${formatBytes(b.artifact.size)})`],
      ['Digest', b.artifact.digest ?? undefined],
      ['Download', b.artifact.url],
      ['Expires', b.artifact.expiresAt],
      ['Provenance', b.provenance ? `${b.provenance.mode}: ${b.provenance.url}` : undefined],
    );
  }
  return formatFields(rows);
}

async function show(argv: string[], io: Io): Promise<number> {
  const { values, positionals } = parseCommandLine(
    argv,
    { json: { type: 'boolean' }, help: { type: 'boolean', short: 'h' } },
    BUILDS_USAGE,
  );
  if (values.help) return help(io);
  const id = oneId(positionals, 'show');
  const build = await (await projectClient(io.env)).getBuild(id);
  if (values.json) io.stdout.write(`${JSON.stringify(build, null, 2)}\n`);
  else textWriter(io.stdout)(describe(build));
  return EXIT_OK;
}

async function logs(argv: string[], io: Io): Promise<number> {
  const { values, positionals } = parseCommandLine(
    argv,
    { follow: { type: 'boolean', short: 'f' }, help: { type: 'boolean', short: 'h' } },
    BUILDS_USAGE,
  );
  if (values.help) return help(io);
  const id = oneId(positionals, 'logs');
  const api = await projectClient(io.env);
  const controller = new AbortController();
  const removeInterrupt = io.onInterrupt((reason) => controller.abort(reason));
  const write = textWriter(io.stdout);
  try {
    // A finished build's log is complete already: no need to wait for the stream's end.
    const live = values.follow && !FINAL_STATUSES.has((await api.getBuild(id, controller.signal)).status);
    if (live) {
      await followLogs(api, id, { signal: controller.signal, onLog: write });
      return EXIT_OK;
    }
    const res = await api.request(`/v1/builds/${segment(id, 'build ID')}/logs`, {
      headers: { accept: 'text/plain' },
      signal: controller.signal,
    });
    if (!res.ok) throw await api.errorFrom(res);
    if (io.stdout.isTTY) {
      const decoder = new TextDecoder();
      for await (const chunk of res.body) write(decoder.decode(chunk as Uint8Array, { stream: true }));
      write(decoder.decode());
    } else await pipeline(res.body, io.stdout, { end: false, signal: controller.signal });
    return EXIT_OK;
  } catch (err) {
    if (controller.signal.aborted) return interruptionOf(controller.signal).exitCode;
    throw err;
  } finally {
    removeInterrupt();
  }
}

async function cancel(argv: string[], io: Io): Promise<number> {
  const { values, positionals } = parseCommandLine(
    argv,
    { wait: { type: 'boolean', short: 'w' }, help: { type: 'boolean', short: 'h' } },
    BUILDS_USAGE,
  );
  if (values.help) return help(io);
  const id = oneId(positionals, 'cancel');
  const api = await projectClient(io.env);
  let build = await api.cancelBuild(id);
  if (values.wait && !FINAL_STATUSES.has(build.status)) {
    build = await waitForFinal(api, id, FINAL_STATUSES, { timeoutMs: 120_000 });
  }
  textWriter(io.stdout)(`${build.id} ${FINAL_STATUSES.has(build.status) ? build.status : 'canceling'}\n`);
  return EXIT_OK;
}

function help(io: Io): number {
  io.stdout.write(`${BUILDS_USAGE}\n`);
  return EXIT_OK;
}

export async function buildsCommand(argv: string[], io: Io): Promise<number> {
  const [sub, ...rest] = argv;
  switch (sub) {
    case 'ls':
    case 'list':
      return ls(rest, io);
    case 'show':
    case 'inspect':
      return show(rest, io);
    case 'logs':
      return logs(rest, io);
    case 'cancel':
      return cancel(rest, io);
    case '-h':
    case '--help':
    case 'help':
      return help(io);
    case undefined:
      throw new UsageError('"kiln builds" requires a command', BUILDS_USAGE);
    default:
      throw new UsageError(`unknown command "kiln builds ${sub}"`, BUILDS_USAGE);
  }
}
