import assert from 'node:assert/strict';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { Duplex } from 'node:stream';
import { test } from 'node:test';
import { MODE_DIR, MODE_SYMLINK } from '../fs/index.js';
import { decodePacket, encodePacket, type Packet, PacketType, type Stat } from '../wire/messages.js';
import type { ServerCall } from './grpc-server.js';
import { receiveLocal } from './local-receiver.js';

/**
 * Plays the daemon's side of a local export from a script of packets; file contents are sent
 * once `contents` resolves.
 */
function fakeDaemon(packets: Packet[], contents = Promise.resolve()): { call: ServerCall; sent: Packet[] } {
  const sent: Packet[] = [];
  // Object mode: each gRPC message is one chunk, and an empty STAT packet is zero bytes.
  const call = new Duplex({
    objectMode: true,
    read() {},
    write(chunk: Buffer, _e, cb) {
      const p = decodePacket(chunk);
      sent.push(p);
      if (p.type === PacketType.REQ) {
        void contents.then(() => {
          call.push(encodePacket({ type: PacketType.DATA, id: p.id, data: Buffer.from(`content ${p.id}`) }));
          call.push(encodePacket({ type: PacketType.DATA, id: p.id }));
        });
      } else if (p.type === PacketType.FIN) call.push(encodePacket({ type: PacketType.FIN, id: 0 }));
      cb();
    },
  });
  for (const p of packets) call.push(encodePacket(p));
  return { call: call as unknown as ServerCall, sent };
}

const stat = (p: Partial<Stat> & { path: string }): Stat => ({
  mode: 0o644,
  uid: 0,
  gid: 0,
  size: 0,
  modTime: 1_700_000_000_000_000_000n,
  linkname: '',
  devmajor: 0,
  devminor: 0,
  ...p,
});

test('receives a tree: dirs, files with contents, symlinks, modes and mtimes', async () => {
  const dest = await fs.mkdtemp(path.join(os.tmpdir(), 'bkc-recv-'));
  try {
    const { call, sent } = fakeDaemon([
      { type: PacketType.STAT, id: 0, stat: stat({ path: 'd', mode: (MODE_DIR | 0o750) >>> 0 }) },
      { type: PacketType.STAT, id: 0, stat: stat({ path: 'd/f', mode: 0o640 }) },
      {
        type: PacketType.STAT,
        id: 0,
        stat: stat({ path: 'l', mode: (MODE_SYMLINK | 0o777) >>> 0, linkname: 'd/f' }),
      },
      { type: PacketType.STAT, id: 0 },
    ]);
    await receiveLocal(call, dest);
    assert.equal(await fs.readFile(path.join(dest, 'd/f'), 'utf8'), 'content 1');
    assert.equal((await fs.stat(path.join(dest, 'd'))).mode & 0o777, 0o750);
    assert.equal((await fs.stat(path.join(dest, 'd/f'))).mode & 0o777, 0o640);
    assert.equal(await fs.readlink(path.join(dest, 'l')), 'd/f');
    assert.equal((await fs.stat(path.join(dest, 'd/f'))).mtimeMs, 1_700_000_000_000);
    assert.deepEqual(
      sent.map((p) => p.type),
      [PacketType.REQ, PacketType.FIN],
    );
  } finally {
    await fs.rm(dest, { recursive: true, force: true });
  }
});

test('a hostile export cannot write outside the destination, also not through a symlink', async () => {
  const base = await fs.mkdtemp(path.join(os.tmpdir(), 'bkc-recv-'));
  const dest = path.join(base, 'dest');
  const outside = path.join(base, 'outside');
  await fs.mkdir(outside);
  try {
    for (const packets of [
      [{ type: PacketType.STAT, id: 0, stat: stat({ path: '../outside/x' }) }],
      [
        {
          type: PacketType.STAT,
          id: 0,
          stat: stat({ path: 'esc', mode: (MODE_SYMLINK | 0o777) >>> 0, linkname: outside }),
        },
        { type: PacketType.STAT, id: 0, stat: stat({ path: 'esc/x' }) },
      ],
      [{ type: PacketType.STAT, id: 0, stat: stat({ path: 'h', linkname: '../outside/y' }) }],
    ] as Packet[][]) {
      const { call } = fakeDaemon([...packets, { type: PacketType.STAT, id: 0 }]);
      await assert.rejects(receiveLocal(call, dest), /escapes destination/);
    }
    assert.deepEqual(await fs.readdir(outside), []);
  } finally {
    await fs.rm(base, { recursive: true, force: true });
  }
});

test('a symlink left in the destination is replaced, never written or chmodded through; a path sent twice is refused', async () => {
  const base = await fs.mkdtemp(path.join(os.tmpdir(), 'bkc-recv-'));
  const dest = path.join(base, 'dest');
  const victim = path.join(base, 'victim');
  const victimDir = path.join(base, 'victim-dir');
  await fs.writeFile(victim, 'keep');
  await fs.chmod(victim, 0o644);
  await fs.mkdir(victimDir, { mode: 0o700 });
  await fs.chmod(victimDir, 0o700);
  try {
    // An earlier export left `config -> victim` and `d -> victim-dir`; this one has a regular
    // file `config` and a directory `d`.
    await fs.mkdir(dest);
    await fs.symlink(victim, path.join(dest, 'config'));
    await fs.symlink(victimDir, path.join(dest, 'd'));
    const { call } = fakeDaemon([
      { type: PacketType.STAT, id: 0, stat: stat({ path: 'config', mode: 0o600 }) },
      { type: PacketType.STAT, id: 0, stat: stat({ path: 'd', mode: (MODE_DIR | 0o777) >>> 0 }) },
      { type: PacketType.STAT, id: 0, stat: stat({ path: 'd/x', mode: 0o666 }) },
      { type: PacketType.STAT, id: 0 },
    ]);
    await receiveLocal(call, dest);
    assert.equal(await fs.readFile(victim, 'utf8'), 'keep');
    assert.equal((await fs.stat(victim)).mode & 0o777, 0o644);
    assert.equal((await fs.stat(victimDir)).mode & 0o777, 0o700);
    assert.deepEqual(await fs.readdir(victimDir), []);
    assert.equal(await fs.readFile(path.join(dest, 'config'), 'utf8'), 'content 0');
    assert.ok((await fs.lstat(path.join(dest, 'd'))).isDirectory());

    // The same path twice: a directory, then a symlink out of the destination in its place.
    const link = (p: string, to: string) =>
      ({
        type: PacketType.STAT,
        id: 0,
        stat: stat({ path: p, mode: (MODE_SYMLINK | 0o777) >>> 0, linkname: to }),
      }) as const;
    const twice = fakeDaemon([
      { type: PacketType.STAT, id: 0, stat: stat({ path: 'e', mode: (MODE_DIR | 0o755) >>> 0 }) },
      { type: PacketType.STAT, id: 0, stat: stat({ path: 'e/passwd', mode: 0o666 }) },
      link('./e/', victimDir),
      { type: PacketType.STAT, id: 0 },
    ]);
    await assert.rejects(receiveLocal(twice.call, dest), /sent \.\/e\/ twice/);
    assert.equal((await fs.stat(victimDir)).mode & 0o777, 0o700);
    assert.deepEqual(await fs.readdir(victimDir), []);

    // A directory already in the destination, never sent: an entry in it, then the directory
    // as a symlink out. With every file slot taken by the 8 files before, the entry waits and
    // would be opened (and chmodded) through the symlink.
    await fs.mkdir(path.join(dest, 'pre'));
    const after = fakeDaemon([
      ...Array.from(
        { length: 8 },
        (_, i) => ({ type: PacketType.STAT, id: 0, stat: stat({ path: `f${i}` }) }) as const,
      ),
      { type: PacketType.STAT, id: 0, stat: stat({ path: 'pre/passwd', mode: 0o666 }) },
      link('pre', victimDir),
      { type: PacketType.STAT, id: 0 },
    ]);
    await assert.rejects(receiveLocal(after.call, dest), /sent pre after entries inside it/);
    assert.equal((await fs.stat(victimDir)).mode & 0o777, 0o700);
    assert.deepEqual(await fs.readdir(victimDir), []);
  } finally {
    await fs.rm(base, { recursive: true, force: true });
  }
});

test('a directory that becomes a symlink after its entries came (another spelling of its name on a case-insensitive filesystem) is never written or chmodded through', async () => {
  const base = await fs.mkdtemp(path.join(os.tmpdir(), 'bkc-recv-'));
  const victimDir = path.join(base, 'victim-dir');
  await fs.mkdir(victimDir);
  await fs.writeFile(path.join(victimDir, 'x'), 'keep', { mode: 0o600 });
  await fs.chmod(path.join(victimDir, 'x'), 0o600);
  const dir = (p: string) => ({
    type: PacketType.STAT,
    id: 0,
    stat: stat({ path: p, mode: (MODE_DIR | 0o755) >>> 0 }),
  });
  const file = (p: string) => ({ type: PacketType.STAT, id: 0, stat: stat({ path: p, mode: 0o666 }) });
  const end = { type: PacketType.STAT, id: 0 };
  try {
    // Linux cannot spell `d` as `D`, so the test swaps `d` itself while the files are awaited:
    // `d/x` is either opened (every file slot taken by the 8 before it) or chmodded afterwards.
    for (const [name, packets] of [
      [
        'waiting for a slot',
        [...Array.from({ length: 8 }, (_, i) => file(`f${i}`)), dir('d'), file('d/x'), end],
      ],
      ['already open', [dir('d'), file('d/x'), end]],
    ] as Array<[string, Packet[]]>) {
      const dest = path.join(base, name.replaceAll(' ', '-'));
      let release = () => {};
      const { call, sent } = fakeDaemon(
        packets,
        new Promise<void>((resolve) => {
          release = resolve;
        }),
      );
      const receiving = receiveLocal(call, dest);
      const requests = packets.filter((p) => p.stat && p.stat.mode === 0o666).length;
      while (sent.length < Math.min(requests, 8)) await new Promise((resolve) => setTimeout(resolve, 5));
      await fs.rm(path.join(dest, 'd'), { recursive: true });
      await fs.symlink(victimDir, path.join(dest, 'd'));
      release();
      await assert.rejects(receiving, /escapes destination: d\/x/, name);
      assert.deepEqual(await fs.readdir(victimDir), ['x'], name);
      assert.equal((await fs.stat(path.join(victimDir, 'x'))).mode & 0o777, 0o600, name);
    }
  } finally {
    await fs.rm(base, { recursive: true, force: true });
  }
});

test('a malformed packet or an early FIN fails the export, never the process', async () => {
  const dest = await fs.mkdtemp(path.join(os.tmpdir(), 'bkc-recv-'));
  try {
    const cut = fakeDaemon([
      { type: PacketType.STAT, id: 0, stat: stat({ path: 'x' }) },
      { type: PacketType.STAT, id: 0, stat: stat({ path: 'y' }) },
    ]);
    // No terminating STAT: the daemon says FIN before any file was asked for and sent.
    (cut.call as unknown as Duplex).push(encodePacket({ type: PacketType.FIN, id: 0 }));
    await assert.rejects(receiveLocal(cut.call, dest), /before it was complete/);
    const garbage = fakeDaemon([]);
    (garbage.call as unknown as Duplex).push(Buffer.from([0x08, 0xff]));
    await assert.rejects(receiveLocal(garbage.call, dest), /malformed packet/);
  } finally {
    await fs.rm(dest, { recursive: true, force: true });
  }
});
