/**
 * Safe extraction of a stored (already validated) context tar for the worker.
 *
 * It re-validates with the same parser as the upload path (tar.ts) and, independently of that, checks
 * the filesystem as it goes, so that even a tar that never went through validation cannot:
 * - write outside `destDir`: names are relative with no `..` (parser), every path is joined under
 *   the resolved `destDir` and checked to stay below it;
 * - write *through* a symlink: every parent directory of an entry is `lstat`ed (once, then cached) and
 *   must be a real directory; an existing symlink or file at the entry's own path is unlinked and
 *   the file created with O_CREAT|O_EXCL|O_NOFOLLOW, so the final component is never followed either.
 *   Symlinks are created verbatim (absolute or `..` targets are fine: they are data, never followed here);
 * - hard-link to something outside: link targets are earlier entries, resolved under `destDir`.
 *
 * Metadata, the way docker's own untar does it: permission bits including setuid/setgid/sticky (see
 * the note on `mode` below), mtimes from the header (directories last, after their contents), and
 * numeric uid/gid from the header only when running as root. Two things are returned instead of
 * set: extended attributes (`TarEntry.xattrs`), and the bits of files and directories whose owner
 * could not read them (`ExtractSummary.permissions`). File data is streamed to disk chunk by chunk
 * with the input's backpressure; nothing is held whole.
 *
 * Expected use: a fresh, private (0700) `destDir` per build. On failure the partial tree is left for
 * the caller to remove.
 */
import { constants, type Stats } from 'node:fs';
import {
  chmod,
  type FileHandle,
  lchown,
  link,
  lstat,
  lutimes,
  mkdir,
  open,
  realpath,
  symlink,
  unlink,
  utimes,
} from 'node:fs/promises';
import path from 'node:path';
import type { Readable } from 'node:stream';
import { AppError } from '../errors.js';
import { type ContextLimits, resolveContextLimits } from './limits.js';
import { quote, type TarEntry, type TarEvent, TarParser } from './tar.js';

export interface ExtractOptions {
  /** Same limits as validation (defaults: DEFAULT_CONTEXT_LIMITS). */
  limits?: Partial<ContextLimits>;
  /** Apply uid/gid from the headers. Default: only when running as root (as docker does). */
  preserveOwner?: boolean;
}

export interface ExtractSummary {
  entries: number;
  files: number;
  /** Bytes of file data written. */
  bytes: number;
  /**
   * Extended attributes of the extracted files and directories, by entry name: those the context
   * keeps (`isKeptXattr`). Node has no call to set them on disk, so they travel beside the tree,
   * for the sender to put in each entry's stat.
   */
  xattrs: Map<string, Readonly<Record<string, Buffer>>>;
  /**
   * The tar's permission bits (`mode & 0o777`) of the entries kept on disk with more: files with
   * owner read, directories with owner read, write and search added, so that a worker that is
   * not root can walk and read them (it would send BuildKit an unreadable file as an empty one).
   * The sender sends these bits instead of the disk's.
   */
  permissions: Map<string, number>;
}

/*
 * Note on `mode`: setuid, setgid and sticky bits are kept. A `docker build` of a local directory sends
 * BuildKit each file's full mode (FileSync Stat.mode carries them) and `COPY` preserves them, so the
 * worker must hand BuildKit the same bits or the image would differ from `docker build`'s. The risk on
 * the worker host (a setuid-root file, when extracting as root) is contained by extracting into a
 * private directory: `destDir` is created 0700 and should not be reachable by other local users. As
 * chown clears setuid/setgid on Linux, ownership is applied before the mode.
 */

/** What files and directories keep on disk beyond the tar's bits (see `ExtractSummary.permissions`). */
const OWNER_READ = 0o400;
const OWNER_ALL = 0o700;

const OPEN_FLAGS = constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | (constants.O_NOFOLLOW ?? 0);

interface DirMeta {
  abs: string;
  mode: number;
  uid: number;
  gid: number;
  mtime: number | null;
}

export async function extractContext(
  tar: Readable,
  destDir: string,
  options: ExtractOptions = {},
): Promise<ExtractSummary> {
  const limits = resolveContextLimits(options.limits);
  const chown = options.preserveOwner ?? process.getuid?.() === 0;
  await mkdir(destDir, { recursive: true, mode: 0o700 });
  const root = await realpath(destDir);

  const parser = new TarParser({
    limits,
    emitData: true,
    notTarMessage: 'the stored context is not a tar archive (no valid tar header at its start)',
  });
  /** Relative paths known to be real directories (created or checked by us). */
  const verified = new Set<string>(['']);
  /** Directory metadata applied at the end, deepest first; later duplicates update in place. */
  const dirs = new Map<string, DirMeta>();
  const summary: ExtractSummary = {
    entries: 0,
    files: 0,
    bytes: 0,
    xattrs: new Map(),
    permissions: new Map(),
  };
  /** The regular file being written, between its `entry` and `entry-end` events. */
  const current: { file: { handle: FileHandle; entry: TarEntry } | null } = { file: null };

  const absolute = (rel: string): string => {
    const abs = path.join(root, ...rel.split('/'));
    const inside = path.relative(root, abs);
    if (inside === '' || inside === '..' || inside.startsWith(`..${path.sep}`) || path.isAbsolute(inside)) {
      throw new AppError('invalid_context', `entry ${quote(rel)} resolves outside the extraction directory`);
    }
    return abs;
  };

  /** Makes sure every parent of `rel` is a real directory under root, creating missing ones. */
  const ensureParents = async (rel: string, entryName: string): Promise<void> => {
    const parts = rel.split('/');
    parts.pop();
    let prefix = '';
    for (const part of parts) {
      prefix = prefix ? `${prefix}/${part}` : part;
      if (verified.has(prefix)) continue;
      const abs = absolute(prefix);
      const st = await lstatOrNull(abs);
      if (!st) {
        await mkdir(abs, { mode: 0o700 });
        if (!dirs.has(prefix)) dirs.set(prefix, { abs, mode: 0o755, uid: -1, gid: -1, mtime: null });
      } else if (st.isSymbolicLink()) {
        throw new AppError(
          'invalid_context',
          `refusing to extract ${quote(entryName)}: its parent ${quote(prefix)} is a symlink, and entries are never written through symlinks`,
        );
      } else if (!st.isDirectory()) {
        throw new AppError(
          'invalid_context',
          `cannot extract ${quote(entryName)}: its parent ${quote(prefix)} is not a directory`,
        );
      }
      verified.add(prefix);
    }
  };

  const onEntry = async (entry: TarEntry): Promise<void> => {
    summary.entries++;
    if (entry.name === '.') return; // the root's metadata stays the caller's
    // A later entry of the same name replaces the earlier one, attributes and bits included; a
    // hard link shares its target's inode, and so its target's.
    const target = entry.type === 'hardlink' ? entry.linkname : undefined;
    setOrDelete(summary.xattrs, entry.name, target ? summary.xattrs.get(target) : entry.xattrs);
    setOrDelete(
      summary.permissions,
      entry.name,
      target ? summary.permissions.get(target) : widenedFrom(entry),
    );
    await ensureParents(entry.name, entry.name);
    const abs = absolute(entry.name);
    const existing = await lstatOrNull(abs);
    if (entry.type === 'directory') {
      if (!existing?.isDirectory()) {
        if (existing) await unlink(abs);
        await mkdir(abs, { mode: 0o700 });
      }
      verified.add(entry.name);
      // Owner, mode and mtime are applied at the end (a 0555 directory must still take its children).
      dirs.set(entry.name, {
        abs,
        mode: entry.mode | OWNER_ALL,
        uid: entry.uid,
        gid: entry.gid,
        mtime: entry.mtime,
      });
      return;
    }
    if (existing?.isDirectory()) {
      throw new AppError('invalid_context', `entry ${quote(entry.name)} would replace a directory`);
    }
    if (existing) await unlink(abs);
    switch (entry.type) {
      case 'file': {
        const handle = await open(abs, OPEN_FLAGS, 0o600);
        current.file = { handle, entry };
        summary.files++;
        return;
      }
      case 'symlink':
        await symlink(entry.linkname, abs);
        if (chown) await lchown(abs, entry.uid, entry.gid);
        await lutimes(abs, entry.mtime, entry.mtime);
        return;
      case 'hardlink': {
        await ensureParents(entry.linkname, entry.name);
        await link(absolute(entry.linkname), abs);
        return;
      }
    }
  };

  const onData = async (chunk: Buffer): Promise<void> => {
    const file = current.file;
    if (!file) return;
    let written = 0;
    while (written < chunk.length) {
      const { bytesWritten } = await file.handle.write(chunk, written, chunk.length - written);
      written += bytesWritten;
    }
    summary.bytes += chunk.length;
  };

  const onEntryEnd = async (entry: TarEntry): Promise<void> => {
    const file = current.file;
    if (!file || file.entry !== entry) return;
    const { handle } = file;
    current.file = null;
    try {
      if (chown) await handle.chown(entry.uid, entry.gid);
      await handle.chmod(entry.mode | OWNER_READ);
      await handle.utimes(entry.mtime, entry.mtime);
    } finally {
      await handle.close();
    }
  };

  const handle = async (event: TarEvent): Promise<void> => {
    try {
      if (event.type === 'entry') await onEntry(event.entry);
      else if (event.type === 'data') await onData(event.chunk);
      else await onEntryEnd(event.entry);
    } catch (err) {
      // A path the file system cannot hold is the context's fault; other I/O errors (ENOSPC, EIO...) are not.
      if ((err as NodeJS.ErrnoException).code === 'ENAMETOOLONG' && event.type === 'entry') {
        throw new AppError(
          'invalid_context',
          `cannot extract ${quote(event.entry.name)}: the path is too long for the file system`,
          { cause: err },
        );
      }
      throw err;
    }
  };

  try {
    const events: TarEvent[] = [];
    const collect = (event: TarEvent) => events.push(event);
    for await (const chunk of tar) {
      parser.write(toBuffer(chunk), collect);
      // Events of one chunk are handled in order before the next chunk is read: backpressure.
      for (const event of events) await handle(event);
      events.length = 0;
    }
    parser.end();
  } finally {
    await current.file?.handle.close().catch(() => {});
  }

  // Directories last, children before parents, so creating entries does not disturb their metadata.
  for (const meta of [...dirs.values()].reverse()) {
    if (chown && meta.uid >= 0) await lchown(meta.abs, meta.uid, meta.gid);
    await chmod(meta.abs, meta.mode);
    if (meta.mtime !== null) await utimes(meta.abs, meta.mtime, meta.mtime);
  }
  return summary;
}

function setOrDelete<V>(map: Map<string, V>, key: string, value: V | undefined): void {
  if (value === undefined) map.delete(key);
  else map.set(key, value);
}

/** The tar's permission bits of a file or directory whose bits on disk get more; else undefined. */
function widenedFrom(entry: TarEntry): number | undefined {
  const kept = entry.type === 'file' ? OWNER_READ : entry.type === 'directory' ? OWNER_ALL : 0;
  return (entry.mode & kept) === kept ? undefined : entry.mode & 0o777;
}

function toBuffer(chunk: unknown): Buffer {
  if (Buffer.isBuffer(chunk)) return chunk;
  if (chunk instanceof Uint8Array) return Buffer.from(chunk.buffer, chunk.byteOffset, chunk.byteLength);
  throw new TypeError('extractContext expects a byte stream');
}

async function lstatOrNull(p: string): Promise<Stats | null> {
  try {
    return await lstat(p);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return null;
    throw err;
  }
}
