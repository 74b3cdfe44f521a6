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

/** Plays the daemon's side of a local export from a script of packets. */
function fakeDaemon(packets: Packet[]): { call: ServerCall; sent: Packet[] } {
  const sent: Packet[] = [];
  // Object mode: each gRPC message is one chunk, and an empty STAT packet is zero bytes.
  const call = new Duplex({
    objectMode: true,
    read() {},
    write(chunk: Buffer, _e, cb) {
      const p = decodePacket(chunk);
      sent.push(p);
      if (p.type === PacketType.REQ) {
        call.push(encodePacket({ type: PacketType.DATA, id: p.id, data: Buffer.from(`content ${p.id}`) }));
        call.push(encodePacket({ type: PacketType.DATA, id: p.id }));
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
