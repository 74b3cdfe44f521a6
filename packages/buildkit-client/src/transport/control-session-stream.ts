import http2 from 'node:http2';
import { Duplex } from 'node:stream';
import { type Dialer, decodeGrpcMessage } from '../grpc/client-connection.js';
import { BytesMessageDeframer, bytesMessageHeader } from './bytes-message-framing.js';

const CONTROL_SESSION = '/moby.buildkit.v1.Control/Session';
/** BuildKit's Go side rejects gRPC messages over 4 MiB; stay well below while still coalescing. */
const MAX_OUTGOING_MESSAGE = 1024 * 1024;
/**
 * Bytes the tunnel takes before it holds its writer back, at each of its two layers (this
 * stream's buffer and Node's HTTP/2 stream's), so ~2 MiB at most. Node's HTTP/2 stream says
 * "full" past 16 KiB, which made the session wait for a drain on four sends in five; this lets
 * the session's frames of one turn go out together.
 */
const TUNNEL_BUFFER = 1024 * 1024;
/**
 * The daemon pushes a whole export through this stream: with HTTP/2's default 64 KiB window it
 * would wait for a round trip every 64 KiB. As the control channel's window.
 */
const STREAM_WINDOW = 2 * 1024 * 1024;

export class ControlSessionError extends Error {
  constructor(
    message: string,
    /** The gRPC status code the daemon ended the stream with, when it sent one. */
    readonly code?: number,
  ) {
    super(message);
  }
}

/**
 * The bytes of a `Control.Session` call as a Duplex, for the session's HTTP/2 server to run on.
 * The call is made on an HTTP/2 connection of its own (a second dial of the daemon), framed
 * here rather than as messages: an export crosses this stream and then the session's own
 * HTTP/2 layer, and gathering every 32 KiB message into a new buffer before handing its bytes
 * on would copy the whole export once more.
 */
export class ControlSessionStream extends Duplex {
  private readonly h2: http2.ClientHttp2Session;
  private readonly req: http2.ClientHttp2Stream;
  private readonly deframer: BytesMessageDeframer;
  private status: { code: number; message: string } | undefined;

  constructor(dialer: Dialer, headers: Array<[string, string]>, maxReceiveMessageBytes: number) {
    super({ allowHalfOpen: false, writableHighWaterMark: TUNNEL_BUFFER });
    this.deframer = new BytesMessageDeframer(maxReceiveMessageBytes);
    this.h2 = http2.connect(dialer.origin, {
      createConnection: dialer.connect,
      settings: { initialWindowSize: STREAM_WINDOW },
    });
    this.h2.on('error', (err: Error) => this.destroy(err));
    this.h2.once('connect', () => this.h2.setLocalWindowSize(2 * STREAM_WINDOW));

    const requestHeaders: http2.OutgoingHttpHeaders = {
      ':method': 'POST',
      ':path': CONTROL_SESSION,
      'content-type': 'application/grpc',
      te: 'trailers',
    };
    for (const [name, value] of headers) {
      const key = name.toLowerCase();
      const had = requestHeaders[key];
      requestHeaders[key] =
        had === undefined ? value : [...(Array.isArray(had) ? had : [String(had)]), value];
    }
    this.req = this.h2.request(requestHeaders);
    this.req.on('response', (h) => this.onHeaders(h, false));
    this.req.on('trailers', (h) => this.onHeaders(h, true));
    this.req.on('data', (chunk: Buffer) => {
      try {
        for (const payload of this.deframer.payloads(chunk)) if (!this.push(payload)) this.req.pause();
      } catch (err) {
        this.destroy(err as Error);
      }
    });
    this.req.on('end', () => this.onEnd());
    this.req.on('error', (err: Error) => this.destroy(err));
  }

  private onHeaders(h: http2.IncomingHttpHeaders, trailers: boolean): void {
    if (!trailers && Number(h[':status']) !== 200) {
      this.destroy(new ControlSessionError(`Control.Session answered HTTP ${h[':status']}`));
      return;
    }
    // A status in the response headers is a trailers-only answer: the call failed at once.
    const code = h['grpc-status'];
    if (code !== undefined) {
      const message = h['grpc-message'];
      this.status = {
        code: Number(code),
        message: typeof message === 'string' ? decodeGrpcMessage(message) : '',
      };
    }
  }

  private onEnd(): void {
    const { status } = this;
    if (status === undefined) {
      this.destroy(new ControlSessionError('Control.Session ended without a gRPC status'));
    } else if (status.code !== 0) {
      this.destroy(
        new ControlSessionError(
          `Control.Session failed: ${status.message} (gRPC status ${status.code})`,
          status.code,
        ),
      );
    } else if (!this.deframer.atBoundary) {
      this.destroy(new ControlSessionError('Control.Session ended inside a message'));
    } else {
      this.push(null);
    }
  }

  override _read(): void {
    if (this.req.isPaused()) this.req.resume();
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

  /** Queued writes go as few messages of up to 1 MiB: per-frame messages make the tunnel several times slower. */
  private send(chunks: Buffer[], cb: (err?: Error | null) => void): void {
    let ok = true;
    let parts: Buffer[] = [];
    let size = 0;
    const flush = () => {
      ok = this.req.write(bytesMessageHeader(size)) && ok;
      for (const p of parts) ok = this.req.write(p) && ok;
      parts = [];
      size = 0;
    };
    this.req.cork();
    for (const c of chunks) {
      for (let off = 0; off < c.length; off += MAX_OUTGOING_MESSAGE) {
        const part = c.length <= MAX_OUTGOING_MESSAGE ? c : c.subarray(off, off + MAX_OUTGOING_MESSAGE);
        if (size + part.length > MAX_OUTGOING_MESSAGE && size > 0) flush();
        parts.push(part);
        size += part.length;
      }
    }
    if (size > 0) flush();
    this.req.uncork();
    if (ok || this.req.writableLength < TUNNEL_BUFFER) cb();
    else this.req.once('drain', () => cb());
  }

  override _final(cb: (err?: Error | null) => void): void {
    this.req.end();
    cb();
  }

  override _destroy(err: Error | null, cb: (err?: Error | null) => void): void {
    if (!this.req.destroyed) this.req.close(http2.constants.NGHTTP2_CANCEL);
    this.h2.destroy();
    cb(err);
  }
}
