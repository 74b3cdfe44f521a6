import { constants, type WriteStream } from 'node:fs';
import fs from 'node:fs/promises';
import path from 'node:path';
import { unixModeFromGo } from '../fs/index.js';
import { decodePacket, encodePacket, PacketType, type Stat } from '../wire/messages.js';
import type { ServerCall } from './grpc-server.js';
import { writeWithBackpressure } from './stream-io.js';

/** Files requested from the daemon at once; each holds an open file descriptor. */
const MAX_IN_FLIGHT = 8;

/**
 * Receiver half of the fsutil protocol for the `local` exporter: the daemon sends one STAT
 * per entry, this side creates the tree under `dest` and requests regular files' contents.
 */
export async function receiveLocal(call: ServerCall, dest: string): Promise<void> {
  await fs.mkdir(dest, { recursive: true });
  const root = await fs.realpath(dest);
  const stats: Stat[] = [];
  const seen = new Set<string>();
  /**
   * Directories entries were received in, whether sent or already in `dest`: never replaced by
   * anything but a directory afterwards. fsutil sends a directory before what it holds; a `d`
   * turned into a symlink after `d/x` would have `d/x` opened, chmodded and chowned through it.
   */
  const parents = new Set<string>();
  const wanted: Array<{ id: number; rel: string }> = [];
  const open = new Map<number, { stream: WriteStream; done: Promise<void> }>();
  let statsDone = false;
  let finSent = false;
  let index = 0;
  let chain = Promise.resolve();
  let failure: Error | undefined;

  const inside = (p: string) => p === root || p.startsWith(root + path.sep);
  const target = (rel: string): string => {
    const p = path.resolve(root, rel);
    if (!inside(p)) throw new Error(`export path escapes destination: ${rel}`);
    return p;
  };
  /**
   * Like target(), and the parent must resolve inside too: nothing is written through a symlink.
   * Checked again whenever the entry is written to, not only at its STAT: a directory can become
   * a symlink in between under another name for it (`D` for `d` on a case-insensitive filesystem,
   * or a composed and decomposed spelling on one that normalizes names).
   */
  const creatable = async (rel: string): Promise<string> => {
    const p = target(rel);
    if (!inside(await fs.realpath(path.dirname(p))))
      throw new Error(`export path escapes destination: ${rel}`);
    return p;
  };
  /**
   * Clears the way for an entry of another type: an earlier export's (or this one's) symlink,
   * file or directory there is removed, never followed, so `config -> /etc/x` left in the
   * destination is not written through. A directory that stays a directory is kept.
   */
  const replace = async (abs: string, dir: boolean): Promise<void> => {
    const old = await fs.lstat(abs).catch(() => undefined);
    if (old && !(dir && old.isDirectory())) await fs.rm(abs, { recursive: true, force: true });
  };

  const requestMore = async () => {
    while (open.size < MAX_IN_FLIGHT && wanted.length > 0) {
      const next = wanted.shift() as { id: number; rel: string };
      // O_NOFOLLOW: should a symlink appear there after replace(), the open fails.
      const flags = constants.O_WRONLY | constants.O_CREAT | constants.O_TRUNC | constants.O_NOFOLLOW;
      const stream = (await fs.open(await creatable(next.rel), flags)).createWriteStream();
      const done = new Promise<void>((resolve, reject) => {
        stream.on('finish', resolve);
        stream.on('error', reject);
      });
      // Awaited only once the file's last packet came; a failure before is the export's.
      done.catch((err: Error) => fail(err));
      open.set(next.id, { stream, done });
      await writeWithBackpressure(call, encodePacket({ type: PacketType.REQ, id: next.id }));
    }
  };

  const handle = async (p: ReturnType<typeof decodePacket>) => {
    if (p.type === PacketType.STAT) {
      if (!p.stat) {
        statsDone = true;
      } else {
        const id = index++;
        const abs = await creatable(p.stat.path);
        // fsutil sends each path once. A second STAT (also spelt `./d` or `d/`) could turn a
        // directory whose files are still being written, or whose modes are set last, into a
        // symlink out of the destination.
        if (seen.has(abs)) throw new Error(`the daemon sent ${p.stat.path} twice`);
        seen.add(abs);
        stats.push(p.stat);
        const kind = unixModeFromGo(p.stat.mode);
        if (kind.type !== 'dir' && parents.has(abs))
          throw new Error(`the daemon sent ${p.stat.path} after entries inside it`);
        for (let d = path.dirname(abs); d !== root && inside(d) && !parents.has(d); d = path.dirname(d))
          parents.add(d);
        await replace(abs, kind.type === 'dir');
        if (kind.type === 'dir') {
          await fs.mkdir(abs, { recursive: true });
        } else if (kind.type === 'symlink') {
          await fs.symlink(p.stat.linkname, abs);
        } else if (kind.type === 'file' && p.stat.linkname) {
          await fs.link(await creatable(p.stat.linkname), abs);
        } else if (kind.type === 'file') {
          wanted.push({ id, rel: p.stat.path });
        } else {
          throw new Error(`local export of special file ${p.stat.path} is not supported`);
        }
      }
    } else if (p.type === PacketType.DATA) {
      const file = open.get(p.id);
      if (!file) throw new Error(`daemon sent data for unrequested file id ${p.id}`);
      if (p.data && p.data.length > 0) {
        await writeWithBackpressure(file.stream, p.data);
      } else {
        file.stream.end();
        await file.done;
        open.delete(p.id);
      }
    } else if (p.type === PacketType.ERR) {
      throw new Error(`error from daemon: ${p.data?.toString() ?? ''}`);
    }
    await requestMore();
    if (statsDone && !finSent && wanted.length === 0 && open.size === 0) {
      finSent = true;
      await applyMetadata(stats, creatable);
      await writeWithBackpressure(call, encodePacket({ type: PacketType.FIN, id: 0 }));
    }
  };

  let fail: (err: Error) => void = () => undefined;
  await new Promise<void>((resolve, reject) => {
    fail = (err: Error) => {
      failure ??= err;
      for (const f of open.values()) f.stream.destroy();
      reject(failure);
    };
    call.on('data', (buf: Buffer) => {
      let p: ReturnType<typeof decodePacket>;
      try {
        p = decodePacket(buf);
      } catch (err) {
        fail(new Error(`a malformed packet from the daemon: ${(err as Error).message}`));
        return;
      }
      if (p.type === PacketType.FIN) {
        chain = chain.then(() => {
          // The daemon's FIN answers ours; one before it ends an export that is not complete.
          if (!finSent) {
            fail(new Error('the daemon ended the local export before it was complete'));
            return;
          }
          call.end();
          resolve();
        });
        return;
      }
      // Packets must be applied in order; the chain keeps them serial without blocking the socket reader.
      call.pause();
      chain = chain
        .then(() => handle(p))
        .then(() => {
          call.resume();
        }, fail);
    });
    call.on('error', fail);
    // Only our FIN says every file arrived: an end (or a cancel) before it is a cut export.
    call.on('end', () =>
      chain.then(() => {
        if (failure) return;
        if (finSent) resolve();
        else fail(new Error('the daemon ended the local export before it was complete'));
      }),
    );
  });
}

/** Modes, owners and times are set last, deepest first, so writing children does not bump a directory's mtime. */
async function applyMetadata(stats: Stat[], creatable: (rel: string) => Promise<string>): Promise<void> {
  const asRoot = process.getuid?.() === 0;
  for (const s of [...stats].reverse()) {
    const abs = await creatable(s.path);
    const kind = unixModeFromGo(s.mode);
    const seconds = Number(s.modTime / 1_000_000n) / 1000;
    if (asRoot) await fs.lchown(abs, s.uid, s.gid);
    // What is there now, not what the STAT said: a later STAT of the same path may have made
    // it a symlink, which chmod and utimes would follow out of the destination.
    if (kind.type === 'symlink' || (await fs.lstat(abs)).isSymbolicLink()) {
      await fs.lutimes(abs, seconds, seconds);
      continue;
    }
    if (!(kind.type === 'file' && s.linkname)) await fs.chmod(abs, kind.perm);
    await fs.utimes(abs, seconds, seconds);
  }
}
