import { open } from 'node:fs/promises';
import * as grpc from '@grpc/grpc-js';
import { type WalkOptions, walk } from '../fs/index.js';
import { decodePacket, encodePacket, PacketType, type Stat } from '../wire/messages.js';
import { readRepeated, readSingle } from './metadata.js';
import { writeWithBackpressure } from './stream-io.js';

export interface LocalDir {
  /** Directory on this machine. */
  path: string;
  /**
   * Send every entry as owned by 0:0, as the docker CLI does (buildctl sends real owners).
   * With it, `COPY` gives the same files as `docker build`.
   */
  resetOwnership?: boolean;
}

/** File contents travel in ~1 MiB DATA packets: fewer, larger messages are what make the transfer fast. */
const CHUNK = 1024 * 1024;
/** Files read and sent concurrently, as fsutil's sender does. */
const SENDERS = 4;
const GO_MODE_TYPE = (1 << 31) | (1 << 27) | (1 << 26) | (1 << 25) | (1 << 24) | (1 << 21) | (1 << 19);

/**
 * Serves `moby.filesync.v1.FileSync/DiffCopy`: BuildKit asks for a named local directory and
 * this side walks it (with the patterns BuildKit sends), streams one STAT per entry, then
 * file contents on request. Implements the sender half of the fsutil protocol.
 */
export function fileSyncDiffCopy(dirs: ReadonlyMap<string, LocalDir>) {
  return (call: grpc.ServerDuplexStream<Buffer, Buffer>) => {
    const dirName = readSingle(call.metadata, 'dir-name') ?? '';
    const dir = dirs.get(dirName);
    if (!dir) {
      call.destroy({
        code: grpc.status.NOT_FOUND,
        details: `no local directory named "${dirName}" in this session (have: ${[...dirs.keys()].join(', ')})`,
      } as grpc.ServiceError);
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
      const message = err instanceof Error ? err.message : String(err);
      if (!call.destroyed) {
        call.write(encodePacket({ type: PacketType.ERR, id: 0, data: Buffer.from(message) }));
        call.destroy({ code: grpc.status.INTERNAL, details: message } as grpc.ServiceError);
      }
    });
  };
}

async function sendDir(
  call: grpc.ServerDuplexStream<Buffer, Buffer>,
  dir: LocalDir,
  opts: WalkOptions,
): Promise<void> {
  const files = new Map<number, string>();
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
    const p = decodePacket(buf);
    if (p.type === PacketType.REQ) requests.push(p.id);
    else if (p.type === PacketType.FIN) finished = true;
    else if (p.type === PacketType.ERR)
      failure = new Error(`error from receiver: ${p.data?.toString() ?? ''}`);
    notify();
  });
  const ended = new Promise<void>((resolve) => {
    const stop = () => {
      failure ??= finished ? undefined : new Error('BuildKit closed the file transfer early');
      notify();
      resolve();
    };
    call.on('end', stop);
    call.on('close', stop);
    call.on('error', stop);
  });

  const walking = (async () => {
    let index = 0;
    for await (const entry of walk(dir.path, opts)) {
      const stat: Stat = {
        path: entry.path,
        mode: entry.mode,
        uid: dir.resetOwnership ? 0 : entry.uid,
        gid: dir.resetOwnership ? 0 : entry.gid,
        size: entry.size,
        modTime: entry.modTime,
        linkname: entry.linkname,
        devmajor: entry.devmajor,
        devminor: entry.devminor,
      };
      if ((entry.mode & GO_MODE_TYPE) === 0) files.set(index, entry.absPath);
      index++;
      await writeWithBackpressure(call, encodePacket({ type: PacketType.STAT, id: 0, stat }));
    }
    await writeWithBackpressure(call, encodePacket({ type: PacketType.STAT, id: 0 }));
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
  const serveRequests = async (scratch: Buffer): Promise<void> => {
    for (;;) {
      if (failure) throw failure;
      const id = requests.shift();
      if (id !== undefined) {
        const file = files.get(id);
        if (file === undefined) throw new Error(`BuildKit requested unknown file id ${id}`);
        files.delete(id);
        await sendFile(call, id, file, scratch);
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

/** Reads through one reusable buffer: encodePacket copies the bytes, so nothing is allocated per chunk but the packet. */
async function sendFile(
  call: grpc.ServerDuplexStream<Buffer, Buffer>,
  id: number,
  file: string,
  scratch: Buffer,
): Promise<void> {
  const handle = await open(file, 'r');
  try {
    for (;;) {
      const { bytesRead } = await handle.read(scratch, 0, scratch.length, null);
      if (bytesRead === 0) break;
      await writeWithBackpressure(
        call,
        encodePacket({ type: PacketType.DATA, id, data: scratch.subarray(0, bytesRead) }),
      );
    }
  } finally {
    await handle.close();
  }
  await writeWithBackpressure(call, encodePacket({ type: PacketType.DATA, id }));
}
