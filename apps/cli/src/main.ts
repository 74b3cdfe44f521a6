/** The `kiln` command: `main(argv, io)` returns the exit code, so tests can run it in-process. */
import { readFileSync } from 'node:fs';
import { buildCommand } from './commands/build.js';
import { BUILDS_USAGE, buildsCommand } from './commands/builds.js';
import { loginCommand } from './commands/login.js';
import { projectsCommand } from './commands/projects.js';
import { tokensCommand } from './commands/tokens.js';
import { CliError, EXIT_FAILURE, EXIT_OK, EXIT_USAGE, formatError, messageOf, UsageError } from './errors.js';
import type { Io } from './io.js';

export { type Io, processIo } from './io.js';

export const USAGE = `Usage: kiln COMMAND

docker build --output, run by a Kiln service.

Commands:
  build PATH|URL|- --output type=tar,dest=FILE ...  Build and download the result (kiln build --help)
  builds ls|show|logs|cancel                         Look at and control builds (kiln builds --help)
  login --url URL --token-stdin                      Save where Kiln is and the token to use
  version (-v, --version)                            Print kiln's version
  tokens ls|create|revoke                            Your project's API tokens (kiln tokens --help)
  projects ls|create|show|set|token                  Projects and quotas, for the operator
                                                     (kiln projects --help)

Environment: KILN_URL and KILN_TOKEN override what kiln login saved; KILN_OPERATOR_TOKEN is
the operator's token for kiln projects.`;

/**
 * The package's version. Read from package.json beside src/ or dist/ (the bundle is one file in
 * dist/), so the number printed is the one npm installed.
 */
export function version(): string {
  const pkg = JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8')) as {
    version: string;
  };
  return pkg.version;
}

export async function main(argv: string[], io: Io): Promise<number> {
  const [command, ...rest] = argv;
  try {
    switch (command) {
      case 'build':
        return await buildCommand(rest, io);
      case 'builds':
        return await buildsCommand(rest, io);
      case 'login':
        return await loginCommand(rest, io);
      case 'tokens':
        return await tokensCommand(rest, io);
      case 'projects':
        return await projectsCommand(rest, io);
      case '--version':
      case '-v':
      case 'version':
        io.stdout.write(`kiln version ${version()}\n`);
        return EXIT_OK;
      case undefined:
      case '-h':
      case '--help':
      case 'help':
        (command === undefined ? io.stderr : io.stdout).write(`${USAGE}\n`);
        return command === undefined ? EXIT_USAGE : EXIT_OK;
      default:
        throw new UsageError(`unknown command "${command}"`, USAGE);
    }
  } catch (err) {
    if (err instanceof UsageError) {
      io.stderr.write(`error: ${err.message}\n${err.usage ? `\n${err.usage}\n` : ''}`);
      return EXIT_USAGE;
    }
    if (err instanceof CliError) {
      io.stderr.write(`${formatError(err)}\n`);
      return err.exitCode;
    }
    io.stderr.write(`error: ${messageOf(err)}\n`);
    return EXIT_FAILURE;
  }
}

export { BUILDS_USAGE };
