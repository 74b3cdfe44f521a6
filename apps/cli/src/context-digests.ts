/**
 * Remembers which context digest the server stored for a context as it was on disk, so an
 * unchanged context is built by digest instead of sent again (POST /v1/builds {"context"}).
 *
 * "Unchanged" is judged the way git does, from the walk's metadata: every entry's path, mode,
 * owner, size, nanosecond mtime, ctime and inode, and link target, and the bytes of inline
 * entries (a Dockerfile from stdin). mtime alone is not enough: `touch -d`, `cp -p`, `rsync -a`
 * and `tar x` set it back, so a rewrite of the same size would look unchanged; ctime cannot be
 * set back, and a replaced file has another inode. A walk that began within a timestamp's
 * granularity of an entry's last change is not fingerprinted ("racily clean" in git's words: a
 * second change in the same tick would leave every field as it was). The file is a cache:
 * unreadable or missing means "upload", and a wrong guess costs a 404 and an upload.
 */
import { createHash, randomBytes } from 'node:crypto';
import { mkdir, readFile, rename, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import type { ContextPlan } from './context-tar.js';

const MAX_ENTRIES = 200;

interface Entry {
  server: string;
  fingerprint: string;
  digest: string;
  usedAt: number;
}

/**
 * How long after a change another change may leave every timestamp as it was: a clock tick where
 * the file system keeps sub-second times, 2 s where it keeps whole seconds (FAT, some network
 * mounts).
 */
function racyWindow(plan: ContextPlan): bigint {
  const coarse = plan.items.every((i) => i.kind !== 'walk' || i.entry.changeTime % 1_000_000_000n === 0n);
  return coarse ? 2_000_000_000n : 20_000_000n;
}

/**
 * A digest of everything that decides the bytes of the context tar, or undefined when an entry
 * changed too close to the walk for its metadata to tell a later change apart.
 */
export function contextFingerprint(plan: ContextPlan): string | undefined {
  const settled = plan.walkedAt - racyWindow(plan);
  if (plan.items.some((i) => i.kind === 'walk' && i.entry.changeTime >= settled)) return undefined;
  const hash = createHash('sha256');
  hash.update(`${plan.dockerfile}\0${plan.ignoreFile ?? ''}\0`);
  for (const item of plan.items) {
    if (item.kind === 'walk') {
      const e = item.entry;
      hash.update(
        `w\0${e.path}\0${e.mode}\0${e.uid}\0${e.gid}\0${e.size}\0${e.modTime}\0${e.changeTime}\0${e.inode}\0${e.linkname}\0${e.devmajor}\0${e.devminor}\n`,
      );
    } else {
      hash.update(`i\0${item.path}\0${item.mode}\0${item.mtimeNs}\0`);
      hash.update(createHash('sha256').update(item.data).digest());
    }
  }
  return hash.digest('hex');
}

export class ContextDigestCache {
  constructor(private readonly file: string) {}

  /** `$XDG_CACHE_HOME/kiln/contexts.json` (default ~/.cache). */
  static at(env: Readonly<Record<string, string | undefined>>): ContextDigestCache {
    const base = env.XDG_CACHE_HOME || path.join(env.HOME || os.homedir(), '.cache');
    return new ContextDigestCache(path.join(base, 'kiln', 'contexts.json'));
  }

  private async read(): Promise<Entry[]> {
    try {
      const parsed = JSON.parse(await readFile(this.file, 'utf8')) as { entries?: unknown };
      return Array.isArray(parsed.entries) ? (parsed.entries as Entry[]) : [];
    } catch {
      return [];
    }
  }

  async lookup(server: string, fingerprint: string): Promise<string | undefined> {
    return (await this.read()).find((e) => e.server === server && e.fingerprint === fingerprint)?.digest;
  }

  /** Records what the server stored; never fails the build (a cache it cannot write is no cache). */
  async remember(server: string, fingerprint: string, digest: string): Promise<void> {
    try {
      const others = (await this.read()).filter(
        (e) => !(e.server === server && e.fingerprint === fingerprint),
      );
      const entries = [{ server, fingerprint, digest, usedAt: Date.now() }, ...others]
        .sort((a, b) => b.usedAt - a.usedAt)
        .slice(0, MAX_ENTRIES);
      await mkdir(path.dirname(this.file), { recursive: true, mode: 0o700 });
      const tmp = `${this.file}.${randomBytes(6).toString('hex')}.tmp`;
      await writeFile(tmp, JSON.stringify({ entries }), { mode: 0o600 });
      await rename(tmp, this.file);
    } catch {
      // Read-only home, full disk: the next build uploads again.
    }
  }
}
