import type { Writable } from 'node:stream';

/** Writes with backpressure; rejects instead of hanging if the stream dies while full or is already gone. */
export function writeWithBackpressure(stream: Writable, chunk: unknown): Promise<void> | undefined {
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
