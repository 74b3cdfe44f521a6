import type { BigIntStats, Stats } from 'node:fs';

// Go's os.FileMode bits: fsutil's Stat.mode carries them, not Unix st_mode.
export const MODE_DIR = 0x80000000;
export const MODE_SYMLINK = 1 << 27;
export const MODE_DEVICE = 1 << 26;
export const MODE_NAMED_PIPE = 1 << 25;
export const MODE_SOCKET = 1 << 24;
export const MODE_SETUID = 1 << 23;
export const MODE_SETGID = 1 << 22;
export const MODE_CHAR_DEVICE = 1 << 21;
export const MODE_STICKY = 1 << 20;
export const MODE_PERM = 0o777;

// Unix st_mode file types; the values are the same on Linux and macOS.
const S_IFMT = 0o170000;
const S_IFSOCK = 0o140000;
const S_IFLNK = 0o120000;
export const S_IFBLK = 0o060000;
const S_IFDIR = 0o040000;
export const S_IFCHR = 0o020000;
const S_IFIFO = 0o010000;

const TYPE_BITS: ReadonlyMap<number, number> = new Map([
  [S_IFBLK, MODE_DEVICE],
  [S_IFCHR, MODE_DEVICE | MODE_CHAR_DEVICE],
  [S_IFDIR, MODE_DIR],
  [S_IFIFO, MODE_NAMED_PIPE],
  [S_IFLNK, MODE_SYMLINK],
  [S_IFSOCK, MODE_SOCKET],
]);

/** The `os.FileMode` Go derives from a stat (os/stat_unix.go), as an unsigned 32-bit number. */
export function goFileMode(stats: Stats | BigIntStats): number {
  const st = Number(stats.mode);
  let mode = (st & MODE_PERM) | (TYPE_BITS.get(st & S_IFMT) ?? 0);
  if (st & 0o4000) mode |= MODE_SETUID;
  if (st & 0o2000) mode |= MODE_SETGID;
  if (st & 0o1000) mode |= MODE_STICKY;
  return mode >>> 0;
}

export type UnixFileType = 'file' | 'dir' | 'symlink' | 'fifo' | 'socket' | 'chardev' | 'blockdev';

/** The file type and `chmod` bits (setuid/setgid/sticky as 0o4000/0o2000/0o1000) a Go FileMode stands for. */
export function unixModeFromGo(mode: number): { type: UnixFileType; perm: number } {
  let perm = mode & MODE_PERM;
  if (mode & MODE_SETUID) perm |= 0o4000;
  if (mode & MODE_SETGID) perm |= 0o2000;
  if (mode & MODE_STICKY) perm |= 0o1000;
  return { type: goFileType(mode), perm };
}

function goFileType(mode: number): UnixFileType {
  if (mode & MODE_DIR) return 'dir';
  if (mode & MODE_SYMLINK) return 'symlink';
  if (mode & MODE_DEVICE) return mode & MODE_CHAR_DEVICE ? 'chardev' : 'blockdev';
  if (mode & MODE_NAMED_PIPE) return 'fifo';
  if (mode & MODE_SOCKET) return 'socket';
  return 'file';
}
