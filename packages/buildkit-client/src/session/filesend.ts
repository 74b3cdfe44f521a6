import type { Writable } from 'node:stream';
import { status } from '../grpc/status.js';
import { decodeBytesMessage } from '../wire/messages.js';
import type { ServerCall } from './grpc-server.js';
import { receiveLocal } from './local-receiver.js';

/**
 * Bytes of export held for a slow sink before the daemon is made to wait (measured: 16 KiB made
 * a 512 MiB export 1.4x slower; 1 MiB and 4 MiB were equally fast into Kiln's storage).
 */
const EXPORT_BUFFER = 1024 * 1024;

/** Where one export goes: a byte stream (tar, oci, docker) or a directory (local). */
export type ExportSink =
  | { kind: 'bytes'; open: (metadata: Record<string, string>) => Writable | Promise<Writable> }
  | { kind: 'dir'; dir: string };

/**
 * Serves `moby.filesync.v1.FileSend/DiffCopy`, through which the daemon pushes an export to
 * the client: BytesMessages for tarball exporters, fsutil packets for the local exporter.
 * `track` receives a promise that settles once the export is complete on this side.
 */
export function fileSendDiffCopy(sink: ExportSink, track: (done: Promise<void>) => void) {
  return (call: ServerCall) => {
    const done = sink.kind === 'dir' ? receiveLocal(call, sink.dir) : receiveBytes(call, sink);
    track(done);
    done.catch((err: unknown) =>
      call.fail(status.INTERNAL, err instanceof Error ? err.message : String(err)),
    );
  };
}

async function receiveBytes(call: ServerCall, sink: Extract<ExportSink, { kind: 'bytes' }>): Promise<void> {
  call.pause();
  const md: Record<string, string> = {};
  for (const [k, v] of Object.entries(call.metadata.getMap())) md[k] = String(v);
  // A cancel while the sink opens must be heard: the stream would then end as if complete.
  let lost: Error | undefined;
  const onError = (err: Error) => {
    lost ??= err;
  };
  const onCancelled = () => onError(new Error('export canceled by the daemon'));
  call.on('error', onError);
  call.on('cancelled', onCancelled);
  let out: Writable;
  try {
    out = await sink.open(md);
  } finally {
    call.off('error', onError);
    call.off('cancelled', onCancelled);
  }
  if (lost) {
    // The error is thrown here; the sink's own 'error' must not also reach the process.
    out.on('error', () => undefined);
    out.destroy(lost);
    throw lost;
  }
  await new Promise<void>((resolve, reject) => {
    let settled = false;
    const fail = (err: Error) => {
      if (settled) return;
      settled = true;
      out.destroy(err);
      reject(err);
    };
    call.on('data', (msg: Buffer) => {
      if (settled) return;
      let bytes: Buffer;
      try {
        bytes = decodeBytesMessage(msg);
      } catch (err) {
        fail(new Error(`a malformed export message from BuildKit: ${(err as Error).message}`));
        return;
      }
      if (out.destroyed) {
        fail(new Error('the export sink closed before the export finished'));
        return;
      }
      // The daemon waits for more flow-control credit while we are paused: a slow sink slows
      // BuildKit. Pausing at the sink's own high-water mark (16 KiB for a file stream) would
      // stop the flow at every 32 KiB message, so up to EXPORT_BUFFER is held first.
      if (!out.write(bytes) && out.writableLength >= EXPORT_BUFFER) {
        call.pause();
        out.once('drain', () => call.resume());
      }
    });
    call.on('end', () => out.end());
    call.on('error', (err: Error) => fail(err));
    call.on('cancelled', () => fail(new Error('export canceled by the daemon')));
    out.on('error', (err: Error) => fail(err));
    // Destroyed without an error (a reader that went away): neither 'error' nor 'finish' comes.
    out.on('close', () => {
      if (!out.writableFinished) fail(new Error('the export sink closed before the export finished'));
    });
    out.on('finish', () => {
      if (settled) return;
      settled = true;
      // Only now let the daemon's Close() return: the bytes are in the caller's hands.
      call.end();
      resolve();
    });
    call.resume();
  });
}
