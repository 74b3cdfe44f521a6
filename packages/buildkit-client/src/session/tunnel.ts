import { Duplex } from 'node:stream';
import type { ClientDuplexStream } from '@grpc/grpc-js';

/** BuildKit's Go side rejects gRPC messages over 4 MiB; stay well below while still coalescing. */
const MAX_MESSAGE = 1024 * 1024;

/**
 * Presents a `Control.Session` bidi stream of BytesMessage as a byte Duplex, so an HTTP/2
 * server (the session's gRPC server) can run over it. Queued writes are coalesced into few
 * large messages: per-frame messages make the tunnel several times slower.
 */
export class BytesMessageTunnel extends Duplex {
  constructor(private readonly call: ClientDuplexStream<Buffer, Buffer>) {
    super({ allowHalfOpen: false });
    call.on('data', (chunk: Buffer) => {
      if (!this.push(chunk)) call.pause();
    });
    call.on('end', () => this.push(null));
    call.on('error', (err: Error) => this.destroy(err));
  }

  override _read(): void {
    this.call.resume();
  }

  override _write(chunk: Buffer, _enc: BufferEncoding, cb: (err?: Error | null) => void): void {
    this.send([chunk], cb);
  }

  override _writev(chunks: Array<{ chunk: Buffer }>, cb: (err?: Error | null) => void): void {
    this.send(
      chunks.map((c) => c.chunk),
      cb,
    );
  }

  private send(chunks: Buffer[], cb: (err?: Error | null) => void): void {
    const messages: Buffer[] = [];
    let pending: Buffer[] = [];
    let size = 0;
    for (const c of chunks) {
      for (let off = 0; off < c.length; off += MAX_MESSAGE) {
        const part = c.subarray(off, off + MAX_MESSAGE);
        if (size + part.length > MAX_MESSAGE && pending.length > 0) {
          messages.push(Buffer.concat(pending, size));
          pending = [];
          size = 0;
        }
        pending.push(part);
        size += part.length;
      }
    }
    if (pending.length > 0)
      messages.push(pending.length === 1 ? (pending[0] as Buffer) : Buffer.concat(pending, size));
    let ok = true;
    for (const m of messages) ok = this.call.write(m) && ok;
    if (ok) cb();
    else this.call.once('drain', () => cb());
  }

  override _final(cb: (err?: Error | null) => void): void {
    this.call.end();
    cb();
  }

  override _destroy(err: Error | null, cb: (err?: Error | null) => void): void {
    this.call.cancel();
    cb(err);
  }
}
