import { closeSync, constants, openSync, readSync } from 'node:fs';
import { open } from 'node:fs/promises';
import { MODE_SYMLINK, type WalkOptions, walk } from '../fs/index.js';
import { status } from '../grpc/status.js';
import {
  DATA_HEADER_ROOM,
  dataPacketInPlace,
  decodePacket,
  encodePacket,
  PacketType,
  type Stat,
} from '../wire/messages.js';
import type { ServerCall } from './grpc-server.js';
import { readRepeated, readSingle } from './metadata.js';
import { writeWithBackpressure } from './stream-io.js';

export interface LocalDir {
  /** Directory on this machine. */
  path: string;
  /**
   * Send the files' real uid/gid. By default every entry goes as 0:0, as buildctl and the
   * docker CLI send local sources (their `resetUIDAndGID` map), so `COPY` gives root-owned
   * files whoever owns the checkout, and the cache keys do not depend on it.
   */
  keepOwnership?: boolean;
  /**
   * Extended attributes of an entry, by its path in the walk (relative, `/`-separated). Node
   * cannot read them from disk, so a caller that knows them (say, from the tar the directory was
   * extracted from) hands them in; without this, none are sent. Never sent for a symlink:
   * fsutil's receiver sets them with setxattr(2), which follows the link on BuildKit's host.
   */
  xattrsOf?: (path: string) => Readonly<Record<string, Buffer>> | undefined;
  /**
   * Permission bits (`0o777`) to send for an entry instead of its own, by its path in the walk:
   * for a caller that keeps files readable on disk that the build must see as they were meant
   * (a file of mode 0000 its owner could not read would otherwise go as an empty file).
   */
  permissionsOf?: (path: string) => number | undefined;
}

/** Told once when a transfer fails on this side, so that the solve cannot wait on it forever. */
export type SenderFailure = (dirName: string, err: Error) => void;

/** File contents travel in ~1 MiB DATA packets: fewer, larger messages are what make the transfer fast. */
const CHUNK = 1024 * 1024;
/** Files read and sent concurrently, as fsutil's sender does. */
const SENDERS = 4;
/**
 * Files up to this size (by their stat) are read with synchronous calls: a promise-based
 * open/read/read/close costs ~0.1 ms of CPU per file in thread-pool hand-offs, 2,000 small
 * files 0.2-0.35 s against 0.03 s (measured), while a 64 KiB read from the page cache
 * holds the event loop for microseconds.
 */
const SMALL_FILE = 64 * 1024;
const GO_MODE_TYPE = (1 << 31) | (1 << 27) | (1 << 26) | (1 << 25) | (1 << 24) | (1 << 21) | (1 << 19);

/** BuildKit ended the transfer itself: it knows, and the solve reports its own error. */
class EndedByReceiver extends Error {}

/**
 * Serves `moby.filesync.v1.FileSync/DiffCopy`: BuildKit asks for a named local directory and
 * this side walks it (with the patterns BuildKit sends), streams one STAT per entry, then
 * file contents on request. Implements the sender half of the fsutil protocol.
 */
export function fileSyncDiffCopy(dirs: ReadonlyMap<string, LocalDir>, onFailure: SenderFailure) {
  return (call: ServerCall) => {
    const dirName = readSingle(call.metadata, 'dir-name') ?? '';
    const dir = dirs.get(dirName);
    if (!dir) {
      call.fail(
        status.NOT_FOUND,
        `no local directory named "${dirName}" in this session (have: ${[...dirs.keys()].join(', ')})`,
      );
      return;
    }
    // An absent followpaths header differs from an empty one to fsutil (it dedupes includes).
    const followPaths =
      call.metadata.get('followpaths').length > 0 ? readRepeated(call.metadata, 'followpaths') : undefined;
    sendDir(call, dir, {
      includePatterns: readRepeated(call.metadata, 'include-patterns'),
      excludePatterns: readRepeated(call.metadata, 'exclude-patterns'),
      ...(followPaths ? { followPaths } : {}),
    }).catch((err: unknown) => {
      const error = err instanceof Error ? err : new Error(String(err));
      // A write that failed because BuildKit reset the stream is BuildKit's doing too.
      if (error instanceof EndedByReceiver || call.destroyed) {
        call.fail(status.CANCELLED, error.message);
        return;
      }
      // As fsutil's sender: an ERR packet (the receiver's "error from sender: ...") and an error status.
      if (!call.destroyed && !call.writableEnded)
        call.write(encodePacket({ type: PacketType.ERR, id: 0, data: Buffer.from(error.message) }));
      call.fail(status.UNKNOWN, error.message);
      onFailure(dirName, error);
    });
  };
}

async function sendDir(call: ServerCall, dir: LocalDir, opts: WalkOptions): Promise<void> {
  const files = new Map<number, { path: string; size: number }>();
  const requests: number[] = [];
  let waiters: Array<() => void> = [];
  const notify = () => {
    const w = waiters;
    waiters = [];
    for (const resolve of w) resolve();
  };
  const nextEvent = () => new Promise<void>((resolve) => waiters.push(resolve));
  let finished = false;
  let walkDone = false;
  let failure: Error | undefined;

  call.on('data', (buf: Buffer) => {
    let p: ReturnType<typeof decodePacket>;
    try {
      p = decodePacket(buf);
    } catch (err) {
      // Thrown from a 'data' listener, it would reach the process (a tick later) or the session.
      failure ??= new Error(`a malformed packet from BuildKit: ${(err as Error).message}`);
      notify();
      return;
    }
    if (p.type === PacketType.REQ) requests.push(p.id);
    else if (p.type === PacketType.FIN) finished = true;
    else if (p.type === PacketType.ERR)
      failure = new EndedByReceiver(`error from receiver: ${p.data?.toString() ?? ''}`);
    notify();
  });
  const ended = new Promise<void>((resolve) => {
    const stop = () => {
      failure ??= finished ? undefined : new EndedByReceiver('BuildKit closed the file transfer early');
      notify();
      resolve();
    };
    call.on('end', stop);
    call.on('close', stop);
    call.on('error', stop);
  });

  // The stats listed in one turn go out in one write (the call's _writev), not one each.
  let corked = false;
  const writeStat = (packet: Buffer) => {
    if (!corked) {
      corked = true;
      call.cork();
      process.nextTick(() => {
        corked = false;
        call.uncork();
      });
    }
    return writeWithBackpressure(call, packet);
  };
  const walking = (async () => {
    let index = 0;
    for await (const entry of walk(dir.path, opts)) {
      // Leaving the loop closes the walk: nothing more is listed once the transfer failed.
      if (failure) return;
      const permissions = dir.permissionsOf?.(entry.path);
      const stat: Stat = {
        path: entry.path,
        mode: permissions === undefined ? entry.mode : ((entry.mode & ~0o777) | (permissions & 0o777)) >>> 0,
        uid: dir.keepOwnership ? entry.uid : 0,
        gid: dir.keepOwnership ? entry.gid : 0,
        size: entry.size,
        modTime: entry.modTime,
        linkname: entry.linkname,
        devmajor: entry.devmajor,
        devminor: entry.devminor,
      };
      const xattrs = (entry.mode & MODE_SYMLINK) === 0 ? dir.xattrsOf?.(entry.path) : undefined;
      if (xattrs) stat.xattrs = xattrs;
      if ((entry.mode & GO_MODE_TYPE) === 0) files.set(index, { path: entry.absPath, size: entry.size });
      index++;
      await writeStat(encodePacket({ type: PacketType.STAT, id: 0, stat }));
    }
    await writeStat(encodePacket({ type: PacketType.STAT, id: 0 }));
  })().then(
    () => {
      walkDone = true;
      notify();
    },
    (err: unknown) => {
      walkDone = true;
      failure ??= err instanceof Error ? err : new Error(String(err));
      notify();
    },
  );

  // Requests are served as they come, also while the walk still streams stats, by a few
  // senders at once so that opening and reading small files overlaps with sending.
  const serveRequests = (scratch: Buffer): Promise<void> =>
    serveFrom(scratch).catch((err: unknown) => {
      // The other senders stop too: a request they took meanwhile must not write after the ERR
      // packet and the status this failure ends the call with.
      failure ??= err instanceof Error ? err : new Error(String(err));
      notify();
      throw err;
    });
  const serveFrom = async (scratch: Buffer): Promise<void> => {
    for (;;) {
      if (failure) throw failure;
      const id = requests.shift();
      if (id !== undefined) {
        const file = files.get(id);
        if (file === undefined) throw new Error(`BuildKit requested unknown file id ${id}`);
        files.delete(id);
        const sending = sendFile(call, id, file, scratch);
        if (sending) await sending;
      } else if (finished && walkDone) {
        return;
      } else {
        await nextEvent();
      }
    }
  };
  await Promise.all(Array.from({ length: SENDERS }, () => serveRequests(Buffer.allocUnsafe(CHUNK))));
  await walking;
  if (failure) throw failure;
  await writeWithBackpressure(call, encodePacket({ type: PacketType.FIN, id: 0 }));
  call.end();
  await ended;
}

/**
 * A file that cannot be opened (a socket, a file made unreadable or removed since its stat was
 * sent) goes as an empty file, as fsutil's sender ignores the open error; a failed read ends the
 * transfer, as there. Either way it is read to EOF, should it have grown. Resolves at once
 * (undefined) when nothing had to be waited for: most files are small and sent that way.
 */
function sendFile(
  call: ServerCall,
  id: number,
  file: { path: string; size: number },
  scratch: Buffer,
): Promise<void> | undefined {
  // O_NONBLOCK: a file that became a fifo since its stat opens at once (and reads empty) instead
  // of holding a thread until someone writes to it. It changes nothing for regular files.
  const flags = constants.O_RDONLY | constants.O_NONBLOCK;
  // The fast path below writes directly: never after the call ended (a write after its end
  // would destroy it, and its ERR packet and status with it).
  if (call.destroyed || call.writableEnded) return Promise.reject(new Error('stream closed while writing'));
  if (file.size > SMALL_FILE) return sendLargeFile(call, id, file, flags);
  const fd = openOrUndefined(file.path, flags);
  if (fd === undefined) return writeWithBackpressure(call, endOfFile(id));
  const read = (buf: Buffer, offset: number, length: number) => readSync(fd, buf, offset, length, null);
  let first: { buf: Buffer; bytesRead: number } | undefined;
  if (file.size > 0) {
    const { buf, size } = chunkBuffer(file.size);
    try {
      first = { buf, bytesRead: read(buf, DATA_HEADER_ROOM, size) };
    } catch (err) {
      closeSync(fd);
      throw err;
    }
    if (first.bytesRead < size) {
      // The usual case: all of it in one read, so its packet and its end go out in one write.
      closeSync(fd);
      call.cork();
      if (first.bytesRead > 0) call.write(dataPacketInPlace(buf, id, first.bytesRead));
      const written = writeWithBackpressure(call, endOfFile(id));
      call.uncork();
      return written;
    }
  }
  // Empty by its stat, or grown since: read on to its end.
  return (async () => {
    try {
      if (first) await writeWithBackpressure(call, dataPacketInPlace(first.buf, id, first.bytesRead));
      await sendRest(call, id, scratch, read);
    } finally {
      closeSync(fd);
    }
    await writeWithBackpressure(call, endOfFile(id));
  })();
}

/** A file read in CHUNKs straight into the buffers its DATA packets go out in, until a short read. */
async function sendLargeFile(
  call: ServerCall,
  id: number,
  file: { path: string; size: number },
  flags: number,
): Promise<void> {
  const handle = await open(file.path, flags).catch(() => undefined);
  if (handle) {
    try {
      for (;;) {
        const { buf, size } = chunkBuffer(file.size);
        const { bytesRead } = await handle.read(buf, DATA_HEADER_ROOM, size, null);
        if (bytesRead > 0) await writeWithBackpressure(call, dataPacketInPlace(buf, id, bytesRead));
        if (bytesRead < size) break;
      }
    } finally {
      await handle.close();
    }
  }
  await writeWithBackpressure(call, endOfFile(id));
}

const endOfFile = (id: number) => encodePacket({ type: PacketType.DATA, id });

function openOrUndefined(path: string, flags: number): number | undefined {
  try {
    return openSync(path, flags);
  } catch {
    return undefined;
  }
}

/**
 * A buffer for one read of `size` bytes after room for the DATA packet's header: up to a CHUNK,
 * one byte more than the stat says, so that a read short of `size` shows the file ended there.
 */
function chunkBuffer(statSize: number): { buf: Buffer; size: number } {
  const size = Math.min(CHUNK, statSize + 1);
  return { buf: Buffer.allocUnsafe(DATA_HEADER_ROOM + size), size };
}

/** What a file holds past what was read: DATA packets through the reused `scratch`, copied. */
async function sendRest(
  call: ServerCall,
  id: number,
  scratch: Buffer,
  read: (buf: Buffer, offset: number, length: number) => number,
): Promise<void> {
  for (;;) {
    const bytesRead = read(scratch, 0, scratch.length);
    if (bytesRead === 0) return;
    await writeWithBackpressure(
      call,
      encodePacket({ type: PacketType.DATA, id, data: scratch.subarray(0, bytesRead) }),
    );
  }
}
