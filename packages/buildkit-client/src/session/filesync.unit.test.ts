// The FileSync sender's file contents against a scripted receiver: what BuildKit does with
// them is tested against real daemons (test/fidelity.test.ts, test/sender-failures.test.ts);
// here, files that grow between their STAT and their request, which no daemon can be timed to
// show.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Duplex } from 'node:stream';
import { test } from 'node:test';
import { MODE_SETUID } from '../fs/filemode.js';
import { Metadata } from '../grpc/metadata.js';
import { decodePacket, encodePacket, PacketType, type Stat } from '../wire/messages.js';
import { fileSyncDiffCopy, type LocalDir } from './filesync.js';
import type { ServerCall } from './grpc-server.js';

/**
 * Plays BuildKit's side of DiffCopy: takes the STATs, calls `beforeRequest` (to change files),
 * requests every regular file, collects each one's DATA until its empty packet, then ends.
 */
function receive(
  dir: string,
  beforeRequest: () => void,
  local: Omit<LocalDir, 'path'> = {},
): Promise<{ contents: Map<string, Buffer>; stats: Map<string, Stat>; largestPacket: number }> {
  return new Promise((resolve, reject) => {
    const ids = new Map<number, string>();
    const parts = new Map<number, Buffer[]>();
    const stats = new Map<string, Stat>();
    let open = 0;
    let index = 0;
    let largestPacket = 0;
    const call = new Duplex({
      objectMode: true,
      read() {},
      write(chunk: Buffer, _enc, cb) {
        const p = decodePacket(chunk);
        // Every entry of the test directory is a regular file.
        if (p.type === PacketType.STAT && p.stat) {
          ids.set(index++, p.stat.path);
          stats.set(p.stat.path, p.stat);
        } else if (p.type === PacketType.STAT) {
          beforeRequest();
          for (const id of ids.keys()) {
            parts.set(id, []);
            open++;
            call.push(encodePacket({ type: PacketType.REQ, id }));
          }
        } else if (p.type === PacketType.DATA) {
          const data = p.data ?? Buffer.alloc(0);
          largestPacket = Math.max(largestPacket, data.length);
          if (data.length > 0) parts.get(p.id)?.push(data);
          else if (--open === 0) call.push(encodePacket({ type: PacketType.FIN, id: 0 }));
        } else if (p.type === PacketType.FIN) {
          call.push(null);
        } else {
          reject(new Error(`unexpected packet ${JSON.stringify(p)}`));
        }
        cb();
      },
    });
    const metadata = new Metadata();
    metadata.add('dir-name', 'context');
    Object.assign(call, {
      metadata,
      fail: (code: number, details: string) => reject(new Error(`failed ${code}: ${details}`)),
    });
    call.on('finish', () =>
      resolve({
        contents: new Map([...ids].map(([id, p]) => [p, Buffer.concat(parts.get(id) ?? [])])),
        stats,
        largestPacket,
      }),
    );
    fileSyncDiffCopy(new Map([['context', { path: dir, ...local }]]), (_name, err) => reject(err))(
      call as unknown as ServerCall,
    );
  });
}

test('each file goes whole, as it is when requested: grown since its STAT, or exactly its STAT size', async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'kiln-filesync-'));
  try {
    const sizes: Record<string, number> = {
      empty: 0,
      one: 1,
      // Read with synchronous calls up to 64 KiB, with promises above.
      'small-limit': 64 * 1024,
      'over-limit': 64 * 1024 + 1,
      'three-chunks': 2.5 * 1024 * 1024,
      'grows-small': 30_000,
      'grows-big': 2 * 1024 * 1024,
      'grows-empty': 0,
    };
    const growth: Record<string, number> = {
      'grows-small': 5_000,
      'grows-big': 1024 * 1024 + 3,
      'grows-empty': 7,
    };
    for (const [name, size] of Object.entries(sizes))
      fs.writeFileSync(path.join(dir, name), randomBytes(size));
    const { contents, largestPacket } = await receive(dir, () => {
      for (const [name, extra] of Object.entries(growth))
        fs.appendFileSync(path.join(dir, name), randomBytes(extra));
    });
    assert.deepEqual([...contents.keys()].sort(), Object.keys(sizes).sort());
    for (const name of Object.keys(sizes)) {
      const onDisk = fs.readFileSync(path.join(dir, name));
      assert.equal(contents.get(name)?.length, onDisk.length, name);
      assert.ok(contents.get(name)?.equals(onDisk), `${name}: the bytes differ`);
    }
    assert.ok(largestPacket <= 1024 * 1024, `a DATA packet of ${largestPacket} bytes`);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test("a caller's permission bits and extended attributes go in the STATs, the file's type and setuid bit kept", async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'kiln-filesync-'));
  try {
    for (const name of ['suid', 'none', 'plain']) fs.writeFileSync(path.join(dir, name), name);
    // What an extractor leaves on disk for a tar's 04111 and 0000 files: owner read added.
    fs.chmodSync(path.join(dir, 'suid'), 0o4511);
    fs.chmodSync(path.join(dir, 'none'), 0o400);
    fs.chmodSync(path.join(dir, 'plain'), 0o640);
    const permissions: Record<string, number> = { suid: 0o111, none: 0o000 };
    const { stats, contents } = await receive(dir, () => {}, {
      permissionsOf: (p) => permissions[p],
      xattrsOf: (p) => (p === 'plain' ? { 'user.k': Buffer.from('v') } : undefined),
    });
    assert.equal(stats.get('suid')?.mode, (MODE_SETUID | 0o111) >>> 0);
    assert.equal(stats.get('none')?.mode, 0);
    assert.equal(stats.get('plain')?.mode, 0o640);
    assert.deepEqual(stats.get('plain')?.xattrs, { 'user.k': Buffer.from('v') });
    assert.equal(stats.get('none')?.xattrs, undefined);
    assert.equal(contents.get('none')?.toString(), 'none');
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('a malformed packet from BuildKit fails the transfer, never the process', {
  timeout: 10_000,
}, async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'kiln-filesync-'));
  try {
    fs.writeFileSync(path.join(dir, 'f'), 'x');
    const call = new Duplex({ objectMode: true, read() {}, write: (_c, _e, cb) => cb() });
    const metadata = new Metadata();
    metadata.add('dir-name', 'context');
    const failed = new Promise<string>((resolve) => {
      Object.assign(call, { metadata, fail: (_code: number, details: string) => resolve(details) });
    });
    const reported = new Promise<Error>((resolve) => {
      fileSyncDiffCopy(new Map([['context', { path: dir }]]), (_name, err) => resolve(err))(
        call as unknown as ServerCall,
      );
    });
    // A truncated varint, on a later tick than the call's start (as a DATA frame after its HEADERS).
    setImmediate(() => call.push(Buffer.from([0x08, 0xff])));
    assert.match(await failed, /malformed packet/);
    assert.match((await reported).message, /malformed packet/);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('a file that fails to read ends the transfer with its error: a request taken after it writes nothing', {
  timeout: 10_000,
}, async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'kiln-filesync-'));
  try {
    for (const name of ['a', 'b']) fs.writeFileSync(path.join(dir, name), 'x');
    const ids = new Map<string, number>();
    let index = 0;
    const after: string[] = [];
    let ended = false;
    const call = new Duplex({
      objectMode: true,
      read() {},
      write(chunk: Buffer, _enc, cb) {
        const p = decodePacket(chunk);
        if (p.type === PacketType.STAT && p.stat) ids.set(p.stat.path, index++);
        else if (p.type === PacketType.STAT) {
          // A directory now: it opens, and its read fails (EISDIR).
          fs.rmSync(path.join(dir, 'a'));
          fs.mkdirSync(path.join(dir, 'a'));
          call.push(encodePacket({ type: PacketType.REQ, id: ids.get('a') as number }));
        } else if (ended) after.push(String(p.type));
        else if (p.type === PacketType.ERR) {
          // The daemon had asked for another file before it read the error.
          call.push(encodePacket({ type: PacketType.REQ, id: ids.get('b') as number }));
        }
        cb();
      },
    });
    const errors: Error[] = [];
    call.on('error', (err: Error) => errors.push(err));
    const metadata = new Metadata();
    metadata.add('dir-name', 'context');
    const failed = new Promise<string>((resolve) => {
      Object.assign(call, {
        metadata,
        // As ServerCall.fail: the status goes after what was written, and the call ends.
        fail: (_code: number, details: string) => {
          ended = true;
          call.end();
          resolve(details);
        },
      });
    });
    fileSyncDiffCopy(new Map([['context', { path: dir }]]), () => undefined)(call as unknown as ServerCall);
    assert.match(await failed, /EISDIR/);
    await new Promise((r) => setTimeout(r, 100));
    assert.deepEqual(after, [], 'nothing is written after the call ended');
    assert.deepEqual(
      errors.map((e) => e.message),
      [],
    );
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});
