// Unit tests that need a process of their own (signals, its stdout and stderr closed): a node
// running a few lines of module code that import the CLI's TypeScript sources, as the tests do.
import { type ChildProcess, type SpawnOptions, spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';

/** `script`, an ES module's text, run by a new node process. */
export function spawnModule(script: string, options: SpawnOptions): ChildProcess {
  return spawn(
    process.execPath,
    ['--conditions=kiln-source', '--import', 'tsx', '--input-type=module', '-e', script],
    options,
  );
}

/** The module `name` next to `base` (a test's import.meta.url), as a string literal for `script`. */
export function moduleAt(name: string, base: string): string {
  return JSON.stringify(fileURLToPath(new URL(name, base)));
}
