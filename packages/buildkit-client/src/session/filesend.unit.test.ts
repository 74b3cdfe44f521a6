import assert from 'node:assert/strict';
import { Duplex, PassThrough } from 'node:stream';
import { test } from 'node:test';
import { Metadata } from '../grpc/metadata.js';
import { ProtoWriter } from '../wire/protobuf.js';
import { fileSendDiffCopy } from './filesend.js';
import type { ServerCall } from './grpc-server.js';

const bytesMessage = (data: Buffer) => new ProtoWriter().bytes(1, data).finish();

/** The daemon's side of a tarball export: a FileSend call that sends `messages`, then waits. */
function exportCall(messages: Buffer[]) {
  const call = new Duplex({ objectMode: true, read() {}, write: (_c, _e, cb) => cb() });
  const failed = new Promise<string>((resolve) => {
    Object.assign(call, {
      metadata: new Metadata(),
      fail: (_code: number, details: string) => resolve(details),
    });
  });
  for (const m of messages) call.push(m);
  return { call: call as unknown as ServerCall, failed };
}

test('an export whose sink closes without an error fails instead of waiting for ever', {
  timeout: 10_000,
}, async () => {
  const sink = new PassThrough({ highWaterMark: 1 });
  const { call, failed } = exportCall([bytesMessage(Buffer.alloc(4096, 1))]);
  let done: Promise<void> | undefined;
  fileSendDiffCopy({ kind: 'bytes', open: () => sink }, (d) => {
    done = d;
  })(call);
  // A reader that went away: destroyed, no error.
  setTimeout(() => sink.destroy(), 50);
  assert.match(await failed, /closed before the export finished/);
  await assert.rejects(done as Promise<void>, /closed before the export finished/);
});

test('a malformed export message fails the export, never the process', { timeout: 10_000 }, async () => {
  const { call, failed } = exportCall([]);
  fileSendDiffCopy({ kind: 'bytes', open: () => new PassThrough() }, (d) => {
    d.catch(() => undefined);
  })(call);
  setImmediate(() => (call as unknown as Duplex).push(Buffer.from([0x0a, 0xff])));
  assert.match(await failed, /malformed export message/);
});

test('an export the daemon cancels while its sink is still opening fails; the sink is not ended as complete', {
  timeout: 10_000,
}, async () => {
  const sink = new PassThrough();
  let ended = false;
  sink.on('finish', () => {
    ended = true;
  });
  const { call } = exportCall([bytesMessage(Buffer.alloc(4096, 1))]);
  let done: Promise<void> | undefined;
  fileSendDiffCopy(
    {
      kind: 'bytes',
      open: () => new Promise<PassThrough>((resolve) => setTimeout(() => resolve(sink), 100)),
    },
    (d) => {
      done = d;
    },
  )(call);
  // The daemon resets the stream while the sink opens: the requests end after what came.
  (call as unknown as Duplex).emit('cancelled', 'stream reset (code 8)');
  (call as unknown as Duplex).push(null);
  await assert.rejects(done as Promise<void>, /canceled by the daemon/);
  assert.equal(ended, false);
  assert.ok(sink.destroyed);
});
