// Temporary build contexts for integration tests.
import { execFile } from 'node:child_process';
import { rmSync } from 'node:fs';
import { chmod, link, mkdir, mkdtemp, rename, rm, symlink, writeFile } from 'node:fs/promises';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, isAbsolute, join, normalize } from 'node:path';
import { promisify } from 'node:util';

const execFileAsync = promisify(execFile);

export interface ContextEntry {
  /** Applied after everything is created, so read-only directories still get their children. */
  mode?: number;
  content?: string | Buffer;
  /** Target of a symlink, stored as given. */
  symlink?: string;
  /** Context-relative path of an earlier or later regular file to hard-link to. */
  hardlinkTo?: string;
  dir?: true;
  /** A special file: a bound (and closed) unix socket, a named pipe, or a character device (major, minor). */
  special?: 'socket' | 'fifo' | { char: [number, number] };
}

export type ContextFile = string | Buffer | ContextEntry;

export interface BuildContext {
  dir: string;
  cleanup(): Promise<void>;
}

/** One of each special file beside a regular one, copied whole: the corpus and Kiln's CLI test share it. */
export const SPECIAL_FILES: Record<string, ContextFile> = {
  Dockerfile: 'FROM scratch\nCOPY . /ctx/\n',
  'a.txt': 'a\n',
  'socket.sock': { special: 'socket', mode: 0o600 },
  'run/fifo': { special: 'fifo', mode: 0o644 },
  'dev/null-dev': { special: { char: [1, 3] }, mode: 0o666 },
};

/** Static busybox (Debian busybox-static): runs in FROM scratch images, which tests must use since nothing can be pulled. */
export function busyboxPath(): string {
  return '/usr/bin/busybox';
}

async function makeSpecial(path: string, kind: NonNullable<ContextEntry['special']>): Promise<void> {
  if (kind === 'fifo') {
    await execFileAsync('mkfifo', [path]);
  } else if (kind === 'socket') {
    // Node unlinks a unix socket when its server closes: bind under another name and keep the file.
    const bound = `${path}.binding`;
    const server = createServer();
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(bound, resolve);
    });
    await rename(bound, path);
    await new Promise<void>((resolve) => server.close(() => resolve()));
  } else {
    await execFileAsync('mknod', [path, 'c', String(kind.char[0]), String(kind.char[1])]);
  }
}

function resolveInside(root: string, path: string): string {
  const relative = normalize(path);
  if (isAbsolute(relative) || relative === '..' || relative.startsWith('../')) {
    throw new Error(`context path escapes the context: ${path}`);
  }
  return join(root, relative);
}

const leftAtExit = new Set<string>();

/**
 * Contexts a test did not clean up (most keep theirs to the end of the file) are removed when
 * the test process exits, so runs do not pile them up in the temporary directory.
 */
function removeAtExit(dir: string): void {
  if (leftAtExit.size === 0) {
    process.once('exit', () => {
      for (const d of leftAtExit) rmSync(d, { recursive: true, force: true });
    });
  }
  leftAtExit.add(dir);
}

/**
 * Creates a temporary directory holding `files` (paths relative to it; parents are
 * created as needed). Hard links are made last so their targets exist.
 */
export async function makeContext(files: Record<string, ContextFile>): Promise<BuildContext> {
  const dir = await mkdtemp(join(tmpdir(), 'kiln-ctx-'));
  removeAtExit(dir);
  const cleanup = (): Promise<void> => rm(dir, { recursive: true, force: true });
  try {
    const entries = Object.entries(files).map(([path, file]): [string, ContextEntry] => [
      resolveInside(dir, path),
      typeof file === 'string' || Buffer.isBuffer(file) ? { content: file } : file,
    ]);
    const hardlinks: [string, string][] = [];
    for (const [path, entry] of entries) {
      await mkdir(dirname(path), { recursive: true });
      if (entry.dir) await mkdir(path, { recursive: true });
      else if (entry.symlink !== undefined) await symlink(entry.symlink, path);
      else if (entry.hardlinkTo !== undefined) hardlinks.push([resolveInside(dir, entry.hardlinkTo), path]);
      else if (entry.special !== undefined) await makeSpecial(path, entry.special);
      else await writeFile(path, entry.content ?? '');
    }
    for (const [target, path] of hardlinks) await link(target, path);
    for (const [path, entry] of entries) {
      if (entry.mode !== undefined && entry.symlink === undefined) await chmod(path, entry.mode);
    }
  } catch (error) {
    await cleanup();
    throw error;
  }
  return { dir, cleanup };
}
