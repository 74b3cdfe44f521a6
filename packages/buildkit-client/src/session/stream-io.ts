import type { Writable } from 'node:stream';
import type * as grpc from '@grpc/grpc-js';

/** Writes with backpressure; rejects instead of hanging if the stream dies while full or is already gone. */
export function writeWithBackpressure(stream: Writable, chunk: Buffer): Promise<void> | undefined {
  if (stream.destroyed || stream.writableEnded)
    return Promise.reject(new Error('stream closed while writing'));
  if (stream.write(chunk)) return undefined;
  if (stream.destroyed) return Promise.reject(new Error('stream closed while writing'));
  return new Promise((resolve, reject) => {
    const done = (err?: Error) => {
      stream.off('drain', onDrain);
      stream.off('close', onClose);
      stream.off('error', onError);
      if (err) reject(err);
      else resolve();
    };
    const onDrain = () => done();
    const onClose = () => done(new Error('stream closed while writing'));
    const onError = (err: Error) => done(err);
    stream.on('drain', onDrain);
    stream.on('close', onClose);
    stream.on('error', onError);
  });
}

/**
 * Ends a server stream with a gRPC error status, after what was already written. grpc-js sends
 * a streaming call's status only from its own 'error' handler: `destroy(err)` drops the queued
 * writes and sends no status at all, which left BuildKit waiting forever for the rest of a
 * context (7 of 12 failed transfers hung on buildkitd v0.24.0).
 */
export function failServerStream(
  call: grpc.ServerDuplexStream<unknown, unknown> | grpc.ServerWritableStream<unknown, unknown>,
  code: grpc.status,
  details: string,
): void {
  if (call.destroyed || call.writableEnded) return;
  call.emit('error', { code, details });
}
