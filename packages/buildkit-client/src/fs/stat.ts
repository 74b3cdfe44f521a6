import { lstatSync, readlinkSync } from 'node:fs';
import type { Stat } from '../wire/messages.js';
import { goFileMode, MODE_DIR, MODE_SOCKET, MODE_SYMLINK, S_IFBLK, S_IFCHR } from './filemode.js';

/**
 * One entry of a walk: fsutil's `types.Stat` (minus xattrs) plus where to read it. `path` is
 * relative to the walk root, `/`-separated, without a leading slash; `mode` has the socket bit
 * cleared, as fsutil does; `size` is `lstat`'s for everything but directories, which get 0
 * (hardlink repeats keep theirs); `modTime` is in nanoseconds since the Unix epoch; `linkname` is
 * a symlink's target, or for a later hardlink to an already walked inode, that first entry's path.
 */
export interface WalkEntry extends Omit<Stat, 'xattrs'> {
  /** Absolute path on disk, for reading the data later. */
  absPath: string;
  /**
   * Not sent: for callers that judge by metadata whether a file changed since they last saw it.
   * ctime (ns) cannot be set back the way mtime can (`touch -d`, `cp -p`, `rsync -a`), and a
   * file replaced by another has another inode.
   */
  changeTime: bigint;
  inode: bigint;
}

/** Inode number to the path of the first walked entry with it; fsutil keys on the inode alone. */
export type HardlinkMap = Map<bigint, string>;

/**
 * fsutil's `mkstat` for an entry the walk keeps. Files are recorded in `hardlinks` even when
 * they have a single link, like fsutil does.
 *
 * Synchronous on purpose: an lstat answered from the dentry cache takes microseconds, while a
 * promise-based one costs its thread-pool hand-off, 20-60 µs of CPU on the main thread plus
 * the pool's, and a 2,000-file context spent 0.1 s of main-thread CPU in them (measured with
 * 64 in flight; one at a time each also waited a round trip).
 */
export function statEntry(path: string, absPath: string, hardlinks: HardlinkMap): WalkEntry {
  const st = lstatSync(absPath, { bigint: true });
  const mode = goFileMode(st);
  const entry: WalkEntry = {
    path,
    absPath,
    // tar's FileInfoHeader cannot represent sockets, so fsutil strips the bit (the rest stays).
    mode: (mode & ~MODE_SOCKET) >>> 0,
    uid: Number(st.uid),
    gid: Number(st.gid),
    size: 0,
    modTime: st.mtimeNs,
    linkname: '',
    devmajor: 0,
    devminor: 0,
    changeTime: st.ctimeNs,
    inode: st.ino,
  };
  if (mode & MODE_DIR) return entry;

  // fsutil tests the st_mode bits one by one, so symlinks and sockets (whose type bits overlap
  // S_IFBLK) also take rdev's numbers; the split is the old 8/12-bit Linux encoding it uses.
  if ((Number(st.mode) & (S_IFBLK | S_IFCHR)) !== 0) {
    entry.devmajor = Number((st.rdev >> 8n) & 0xfffn);
    entry.devminor = Number((st.rdev & 0xffn) | ((st.rdev >> 12n) & 0xfff00n));
  }
  const first = st.nlink > 1n ? hardlinks.get(st.ino) : undefined;
  if (first !== undefined) entry.linkname = first;
  else hardlinks.set(st.ino, path);
  // fsutil zeroes a hardlink repeat's size and then overwrites it with the real one.
  entry.size = Number(st.size);
  if (mode & MODE_SYMLINK) entry.linkname = readlinkSync(absPath);
  return entry;
}
