import { createWriteStream, readFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { connect, type ExportEntry } from './client.js';
import { BuildkitError } from './errors.js';
import { parseCsvAttrs } from './output-spec.js';
import { PACKAGE_ROOT } from './package-root.js';
import { PlainProgressRenderer } from './progress.js';
import { loadSecrets, parseSecretSpec } from './secret-spec.js';

const USAGE = `usage:
  bkctl [--addr ADDR] build --frontend dockerfile.v0 --local context=DIR --local dockerfile=DIR
        [--opt target=S] [--opt build-arg:K=V] [--opt filename=F] [--opt force-network-mode=none]
        [--output type=tar,dest=FILE|type=local,dest=DIR] [--progress plain|quiet]
        [--secret id=ID,src=FILE|id=ID,env=VAR|id=ID] [--keep-ownership]
  bkctl [--addr ADDR] debug workers
  bkctl [--addr ADDR] du
  bkctl --version
Local files go as owned by 0:0, as with buildctl; --keep-ownership sends their uid/gid.
ADDR: unix:///path, tcp://host:port, docker:///var/run/docker.sock (default $BUILDKIT_HOST)`;

/** buildctl-compatible command line; returns the exit code. */
export async function main(argv: string[]): Promise<number> {
  let parsed: ReturnType<typeof parseCommandLine>;
  try {
    parsed = parseCommandLine(argv);
  } catch (err) {
    // parseArgs names the unknown or malformed option; a stack trace would bury that.
    process.stderr.write(`bkctl: ${(err as Error).message}\n${USAGE}\n`);
    return 2;
  }
  const { values, positionals } = parsed;
  if (values.version) {
    const pkg = JSON.parse(readFileSync(new URL('package.json', PACKAGE_ROOT), 'utf8')) as {
      version: string;
    };
    process.stdout.write(`bkctl version ${pkg.version}\n`);
    return 0;
  }
  const command = positionals.join(' ');
  if (values.help || !['build', 'debug workers', 'du'].includes(command)) {
    process.stderr.write(`${USAGE}\n`);
    return values.help ? 0 : 2;
  }
  const tls =
    values.tlscacert || values.tlscert
      ? {
          ...(values.tlscacert ? { ca: values.tlscacert } : {}),
          ...(values.tlscert ? { cert: values.tlscert } : {}),
          ...(values.tlskey ? { key: values.tlskey } : {}),
          ...(values.tlsservername ? { serverName: values.tlsservername } : {}),
        }
      : undefined;
  try {
    const client = await connect(values.addr, tls ? { tls } : {});
    try {
      if (command === 'debug workers') {
        for (const w of await client.listWorkers()) {
          process.stdout.write(
            `${w.id}\t${w.platforms.map((p) => `${p.os}/${p.architecture}${p.variant ? `/${p.variant}` : ''}`).join(',')}\n`,
          );
        }
        return 0;
      }
      if (command === 'du') {
        let total = 0;
        for (const r of await client.diskUsage()) {
          total += r.size;
          process.stdout.write(`${r.id}\t${r.size}\t${r.description}\n`);
        }
        process.stdout.write(`Total:\t${total}\n`);
        return 0;
      }
      const localDirs = Object.fromEntries(
        values.local.map((l) => {
          const [name, dir] = splitPair(l, '--local');
          return [name, { path: dir, keepOwnership: values['keep-ownership'] }];
        }),
      );
      const frontendAttrs = Object.fromEntries(values.opt.map((o) => splitPair(o, '--opt')));
      const exports = values.output ? [exportFromSpec(values.output)] : [];
      const secrets = await loadSecrets(values.secret.map(parseSecretSpec));
      const renderer = new PlainProgressRenderer((t) => process.stderr.write(t));
      const controller = new AbortController();
      process.once('SIGINT', () => controller.abort());
      await client.solve(
        { frontend: values.frontend, frontendAttrs, localDirs, exports, secrets, signal: controller.signal },
        values.progress === 'quiet' ? undefined : (e) => renderer.render(e),
      );
      return 0;
    } finally {
      await client.close();
    }
  } catch (err) {
    const message = err instanceof BuildkitError ? err.message : ((err as Error).stack ?? String(err));
    process.stderr.write(`error: ${message}\n`);
    return 1;
  }
}

function splitPair(s: string, flag: string): [string, string] {
  const eq = s.indexOf('=');
  if (eq <= 0) throw new BuildkitError('INVALID_ARGUMENT', `${flag} takes KEY=VALUE, got "${s}"`);
  return [s.slice(0, eq), s.slice(eq + 1)];
}

function exportFromSpec(spec: string): ExportEntry {
  const { type, dest, ...attrs } = parseCsvAttrs(spec);
  if (!type) throw new BuildkitError('INVALID_ARGUMENT', `--output needs type=..., got "${spec}"`);
  if (type === 'local') {
    if (!dest) throw new BuildkitError('INVALID_ARGUMENT', 'type=local needs dest=DIR');
    return { type, dir: dest, attrs };
  }
  if (type === 'tar' || type === 'oci' || type === 'docker') {
    // A 4 MiB highWaterMark lets the 32 KiB messages that queue behind a write go down in one
    // writev: a 512 MiB export into a file took 2.05 s instead of 2.39 s (bench's export probe).
    const output =
      !dest || dest === '-' ? process.stdout : createWriteStream(dest, { highWaterMark: 4 << 20 });
    return { type, attrs, output };
  }
  return { type, attrs };
}

function parseCommandLine(argv: string[]) {
  return parseArgs({
    args: argv,
    allowPositionals: true,
    options: {
      addr: { type: 'string' },
      frontend: { type: 'string', default: 'dockerfile.v0' },
      local: { type: 'string', multiple: true, default: [] },
      opt: { type: 'string', multiple: true, default: [] },
      output: { type: 'string', short: 'o' },
      progress: { type: 'string', default: 'plain' },
      secret: { type: 'string', multiple: true, default: [] },
      'keep-ownership': { type: 'boolean', default: false },
      tlscacert: { type: 'string' },
      tlscert: { type: 'string' },
      tlskey: { type: 'string' },
      tlsservername: { type: 'string' },
      help: { type: 'boolean', short: 'h' },
      version: { type: 'boolean' },
    },
  });
}
