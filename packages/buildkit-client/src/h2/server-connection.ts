import type { Duplex } from 'node:stream';
import { encodeHeaders, type HeaderList, HpackDecoder, HpackError } from './hpack.js';

/**
 * The server side of one HTTP/2 connection (RFC 7540), written for the BuildKit session: the
 * daemon's gRPC client opens streams, this side answers. Node's own HTTP/2 would need the bytes
 * handed to it through a JSStreamSocket, which copies every chunk into native memory and calls
 * back into JavaScript per frame; here DATA payloads travel on as views of the chunks they came
 * in, and what this side sends is written as frame headers plus the caller's buffers.
 *
 * Covered: the preface, SETTINGS, PING, WINDOW_UPDATE and both directions of flow control,
 * HEADERS with CONTINUATION and padding, DATA, RST_STREAM, GOAWAY. Not covered, as a gRPC
 * server never needs them: server push, priorities (ignored), the Upgrade and CONNECT methods.
 */

const PREFACE = Buffer.from('PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n', 'latin1');
const FRAME_HEADER = 9;
const DEFAULT_WINDOW = 65535;
const MAX_WINDOW = 2 ** 31 - 1;
/** What one CONTINUATION fragment counts for at least against the header list bound. */
const MIN_FRAGMENT_COST = 1024;
/** SETTINGS_MAX_FRAME_SIZE this side announces: the protocol's default, which is all Go's gRPC sends. */
const MAX_FRAME = 16384;

enum T {
  DATA = 0,
  HEADERS = 1,
  PRIORITY = 2,
  RST_STREAM = 3,
  SETTINGS = 4,
  PUSH_PROMISE = 5,
  PING = 6,
  GOAWAY = 7,
  WINDOW_UPDATE = 8,
  CONTINUATION = 9,
}
const END_STREAM = 0x1;
const ACK = 0x1;
const END_HEADERS = 0x4;
const PADDED = 0x8;
const PRIORITY_FLAG = 0x20;

/** HTTP/2 error codes this side sends. */
export const H2Code = {
  NO_ERROR: 0,
  PROTOCOL_ERROR: 1,
  INTERNAL_ERROR: 2,
  FLOW_CONTROL_ERROR: 3,
  STREAM_CLOSED: 5,
  FRAME_SIZE_ERROR: 6,
  REFUSED_STREAM: 7,
  CANCEL: 8,
  COMPRESSION_ERROR: 9,
  ENHANCE_YOUR_CALM: 11,
} as const;

/**
 * Frames other than DATA (PING and SETTINGS acknowledgements, resets, window updates) are answers
 * a peer can ask for without end while it reads nothing, and DATA's flow control does not bound
 * them: past this many unsent, the connection is ended, as Go's HTTP/2 server does (its
 * maxQueuedControlFrames).
 */
const MAX_UNSENT_FRAMES = 10_000;

class ConnectionError extends Error {
  constructor(
    readonly code: number,
    message: string,
  ) {
    super(message);
  }
}

export interface H2ServerOptions {
  /** Receive window of each stream (SETTINGS_INITIAL_WINDOW_SIZE this side announces). */
  streamWindow: number;
  /** Receive window of the whole connection. */
  connectionWindow: number;
  /** Streams the peer may have open at once; more are refused. */
  maxConcurrentStreams: number;
  /** Largest header list accepted (and announced as SETTINGS_MAX_HEADER_LIST_SIZE). */
  maxHeaderListBytes: number;
}

/** What the application hears about a stream the peer opened. */
export interface H2StreamHandlers {
  /** A piece of the request body: a view, valid as long as the application keeps it. */
  data(chunk: Buffer): void;
  /** The peer finished its side of the stream. */
  end(): void;
  /** The stream is gone without a clean end: reset by the peer, or the connection closed. */
  abort(reason: string): void;
}

interface Outgoing {
  parts: Buffer[];
  bytes: number;
  done?: () => void;
}

/** One stream the peer opened: the application reads it through handlers and answers through its methods. */
export class H2ServerStream {
  handlers: H2StreamHandlers | undefined;
  /** The peer's window for what this side sends on the stream. */
  sendWindow: number;
  readonly queue: Outgoing[] = [];
  trailers: HeaderList | undefined;
  respondedHeaders = false;
  remoteEnded = false;
  localEnded = false;
  closed = false;
  /** Bytes received the application has consumed but the peer has not been credited for. */
  private credit = 0;
  /**
   * What the peer may still send on this stream: the window this side advertised, less what
   * came, plus what was credited back. A peer that sends past it is refused (the stream reset),
   * or what it sends ahead of a slow reader would pile up without bound.
   */
  recvWindow: number;

  constructor(
    private readonly conn: H2ServerConnection,
    readonly id: number,
    readonly headers: HeaderList,
    sendWindow: number,
  ) {
    this.sendWindow = sendWindow;
    this.recvWindow = conn.options.streamWindow;
  }

  header(name: string): string | undefined {
    return this.headers.find(([n]) => n === name)?.[1];
  }

  /** Tells the peer it may send `bytes` more: call once the application has taken them. */
  consumed(bytes: number): void {
    if (this.closed || this.remoteEnded) return;
    this.credit += bytes;
    // Credit in batches: a WINDOW_UPDATE per 16 KiB frame would cost both sides for nothing.
    if (this.credit >= this.conn.options.streamWindow / 4) {
      this.conn.windowUpdate(this.id, this.credit);
      this.recvWindow += this.credit;
      this.credit = 0;
    }
  }

  respond(headers: HeaderList): void {
    if (this.respondedHeaders || this.localEnded || this.closed) return;
    this.respondedHeaders = true;
    this.conn.sendHeaders(this.id, headers, false);
  }

  /** Queues body bytes; `done` runs once they are handed to the connection's socket. */
  write(parts: Buffer[], done?: () => void): void {
    if (this.localEnded || this.closed) {
      done?.();
      return;
    }
    let bytes = 0;
    for (const p of parts) bytes += p.length;
    this.queue.push({ parts, bytes, ...(done ? { done } : {}) });
    this.conn.pump();
  }

  /** Ends this side of the stream with trailers, after what is queued. */
  end(trailers: HeaderList): void {
    if (this.localEnded || this.closed) return;
    this.localEnded = true;
    this.trailers = trailers;
    this.conn.pump();
  }

  /** Ends this side at once with headers and no body (a gRPC "trailers-only" answer). */
  endWithHeaders(headers: HeaderList): void {
    if (this.localEnded || this.closed) return;
    this.localEnded = true;
    this.respondedHeaders = true;
    this.conn.sendHeaders(this.id, headers, true);
    this.conn.streamLocalEnded(this);
  }

  reset(code: number): void {
    if (this.closed) return;
    this.conn.resetStream(this, code);
  }
}

/**
 * Serves HTTP/2 on `socket` (the preface first). `onStream` gets every stream the peer opens,
 * with its request headers; it must set the stream's handlers before returning.
 */
export class H2ServerConnection {
  private readonly streams = new Map<number, H2ServerStream>();
  private readonly decoder: HpackDecoder;
  private readonly input: Buffer[] = [];
  private inputBytes = 0;
  private prefaceSeen = false;
  private lastStreamId = 0;
  private peerInitialWindow = DEFAULT_WINDOW;
  private peerMaxFrame = 16384;
  private connSendWindow = DEFAULT_WINDOW;
  private connCredit = 0;
  private continuation: { streamId: number; flags: number; block: Buffer[]; bytes: number } | undefined;
  private out: Buffer[] = [];
  /** Frames other than DATA in `out`, and written to the socket but not yet taken by the system. */
  private outFrames = 0;
  private unsentFrames = 0;
  private flushScheduled = false;
  private blocked = false;
  private closed = false;
  private goingAway = false;

  constructor(
    private readonly socket: Duplex,
    readonly options: H2ServerOptions,
    private readonly onStream: (stream: H2ServerStream) => void,
  ) {
    this.decoder = new HpackDecoder(4096, options.maxHeaderListBytes);
    this.sendFrame(
      T.SETTINGS,
      0,
      0,
      settingsPayload([
        [0x3, options.maxConcurrentStreams],
        [0x4, options.streamWindow],
        [0x6, options.maxHeaderListBytes],
      ]),
    );
    if (options.connectionWindow > DEFAULT_WINDOW)
      this.windowUpdate(0, options.connectionWindow - DEFAULT_WINDOW);
    socket.on('data', (chunk: Buffer) => this.receive(chunk));
    // A socket handed over after an upgrade was paused so that nothing was read without a reader.
    socket.resume();
    socket.on('drain', () => {
      this.blocked = false;
      this.pump();
    });
    socket.on('end', () => this.close('the peer closed the connection'));
    socket.on('close', () => this.close('the connection closed'));
    socket.on('error', (err: Error) => this.close(`connection error: ${err.message}`));
  }

  /** Closes the connection and aborts its streams. */
  destroy(): void {
    this.close('the session closed');
    this.socket.destroy();
  }

  private close(reason: string): void {
    if (this.closed) return;
    this.closed = true;
    for (const s of this.streams.values()) {
      s.closed = true;
      for (const o of s.queue) o.done?.();
      s.queue.length = 0;
      s.handlers?.abort(reason);
    }
    this.streams.clear();
    if (!this.socket.destroyed) this.socket.end();
  }

  // ---- receiving ----------------------------------------------------------------------------

  private receive(chunk: Buffer): void {
    if (this.closed) return;
    this.input.push(chunk);
    this.inputBytes += chunk.length;
    try {
      this.parse();
      if (this.outFrames + this.unsentFrames > MAX_UNSENT_FRAMES) {
        // It reads none of them: neither will it read a GOAWAY.
        this.close('the peer reads none of the answers it asks for');
        this.socket.destroy();
      }
    } catch (err) {
      if (err instanceof ConnectionError) this.fail(err.code, err.message);
      else if (err instanceof HpackError) this.fail(H2Code.COMPRESSION_ERROR, err.message);
      // A handler's bug ends this connection (its build fails), not the process.
      else this.fail(H2Code.INTERNAL_ERROR, err instanceof Error ? err.message : String(err));
    }
  }

  private parse(): void {
    if (!this.prefaceSeen) {
      if (this.inputBytes < PREFACE.length) return;
      if (!this.take(PREFACE.length).equals(PREFACE))
        throw new ConnectionError(H2Code.PROTOCOL_ERROR, 'not an HTTP/2 connection preface');
      this.prefaceSeen = true;
    }
    while (!this.closed && this.inputBytes >= FRAME_HEADER) {
      const head = this.peekHeader();
      const length = head.readUIntBE(0, 3);
      if (length > MAX_FRAME) throw new ConnectionError(H2Code.FRAME_SIZE_ERROR, `frame of ${length} bytes`);
      if (this.inputBytes < FRAME_HEADER + length) return;
      this.skip(FRAME_HEADER);
      const type = head[3] as number;
      const flags = head[4] as number;
      const streamId = head.readUInt32BE(5) & 0x7fffffff;
      if (this.continuation && type !== T.CONTINUATION)
        throw new ConnectionError(H2Code.PROTOCOL_ERROR, 'expected CONTINUATION');
      if (type === T.DATA) this.onData(streamId, flags, this.takeViews(length), length);
      else this.onFrame(type, flags, streamId, this.take(length));
    }
  }

  private onFrame(type: number, flags: number, streamId: number, payload: Buffer): void {
    switch (type) {
      case T.HEADERS:
        this.onHeaders(streamId, flags, payload);
        return;
      case T.CONTINUATION:
        this.onContinuation(streamId, flags, payload);
        return;
      case T.PRIORITY:
        if (payload.length !== 5) throw new ConnectionError(H2Code.FRAME_SIZE_ERROR, 'PRIORITY size');
        return;
      case T.RST_STREAM: {
        if (payload.length !== 4) throw new ConnectionError(H2Code.FRAME_SIZE_ERROR, 'RST_STREAM size');
        if (streamId === 0) throw new ConnectionError(H2Code.PROTOCOL_ERROR, 'RST_STREAM on stream 0');
        const s = this.streams.get(streamId);
        if (s) this.forget(s, `stream reset by the peer (code ${payload.readUInt32BE(0)})`);
        return;
      }
      case T.SETTINGS:
        this.onSettings(streamId, flags, payload);
        return;
      case T.PUSH_PROMISE:
        throw new ConnectionError(H2Code.PROTOCOL_ERROR, 'PUSH_PROMISE from a client');
      case T.PING:
        if (payload.length !== 8) throw new ConnectionError(H2Code.FRAME_SIZE_ERROR, 'PING size');
        if (streamId !== 0) throw new ConnectionError(H2Code.PROTOCOL_ERROR, 'PING on a stream');
        if (!(flags & ACK)) this.sendFrame(T.PING, ACK, 0, payload);
        return;
      case T.GOAWAY:
        this.goingAway = true;
        return;
      case T.WINDOW_UPDATE:
        this.onWindowUpdate(streamId, payload);
        return;
      default:
        // Unknown frame types are ignored (RFC 7540 §4.1).
        return;
    }
  }

  private onData(streamId: number, flags: number, views: Buffer[], length: number): void {
    if (streamId === 0) throw new ConnectionError(H2Code.PROTOCOL_ERROR, 'DATA on stream 0');
    if (streamId > this.lastStreamId)
      throw new ConnectionError(H2Code.PROTOCOL_ERROR, 'DATA on an idle stream');
    // The connection's window is credited as data arrives: each stream's window bounds what waits.
    this.connCredit += length;
    if (this.connCredit >= this.options.connectionWindow / 4) {
      this.windowUpdate(0, this.connCredit);
      this.connCredit = 0;
    }
    const s = this.streams.get(streamId);
    if (!s || s.remoteEnded) return;
    s.recvWindow -= length;
    if (s.recvWindow < 0) {
      this.resetStream(s, H2Code.FLOW_CONTROL_ERROR);
      return;
    }
    let body = views;
    let padding = 0;
    if (flags & PADDED) {
      const all = Buffer.concat(views);
      padding = all[0] ?? 0;
      if (length === 0 || padding >= length) throw new ConnectionError(H2Code.PROTOCOL_ERROR, 'bad padding');
      body = [all.subarray(1, length - padding)];
      // Padding counts against flow control but never reaches the application.
      s.consumed(padding + 1);
    }
    for (const v of body) if (v.length > 0) s.handlers?.data(v);
    if (flags & END_STREAM) this.remoteEnd(s);
  }

  private onHeaders(streamId: number, flags: number, payload: Buffer): void {
    if (streamId === 0 || streamId % 2 === 0)
      throw new ConnectionError(H2Code.PROTOCOL_ERROR, `HEADERS on stream ${streamId}`);
    let fragment = payload;
    if (flags & PADDED) {
      const pad = payload[0] ?? 0;
      if (payload.length === 0 || pad >= payload.length)
        throw new ConnectionError(H2Code.PROTOCOL_ERROR, 'bad padding');
      fragment = payload.subarray(1, payload.length - pad);
    }
    if (flags & PRIORITY_FLAG) {
      if (fragment.length < 5)
        throw new ConnectionError(H2Code.FRAME_SIZE_ERROR, 'HEADERS too short for its priority');
      fragment = fragment.subarray(5);
    }
    this.continuation = { streamId, flags, block: [fragment], bytes: fragment.length };
    if (flags & END_HEADERS) this.headerBlockDone();
  }

  private onContinuation(streamId: number, flags: number, payload: Buffer): void {
    const c = this.continuation;
    if (!c || c.streamId !== streamId)
      throw new ConnectionError(H2Code.PROTOCOL_ERROR, 'unexpected CONTINUATION');
    c.block.push(payload);
    // Each fragment counts as at least MIN_FRAGMENT_COST: empty CONTINUATIONs would otherwise
    // pile up without ever reaching the bound (a peer sends full frames but the last).
    c.bytes += Math.max(payload.length, MIN_FRAGMENT_COST);
    if (c.bytes > this.options.maxHeaderListBytes)
      throw new ConnectionError(H2Code.PROTOCOL_ERROR, 'header block too large');
    if (flags & END_HEADERS) this.headerBlockDone();
  }

  private headerBlockDone(): void {
    const c = this.continuation as NonNullable<typeof this.continuation>;
    this.continuation = undefined;
    // Decoded whatever becomes of the stream: the table must stay in step with the peer's.
    const headers = this.decoder.decode(Buffer.concat(c.block));
    const existing = this.streams.get(c.streamId);
    if (existing) {
      // Trailers: a gRPC client sends none, but they end the stream all the same.
      if (!(c.flags & END_STREAM))
        throw new ConnectionError(H2Code.PROTOCOL_ERROR, 'second HEADERS without END_STREAM');
      this.remoteEnd(existing);
      return;
    }
    if (c.streamId <= this.lastStreamId) {
      this.sendFrame(T.RST_STREAM, 0, c.streamId, u32(H2Code.STREAM_CLOSED));
      return;
    }
    this.lastStreamId = c.streamId;
    if (this.goingAway || this.streams.size >= this.options.maxConcurrentStreams) {
      this.sendFrame(T.RST_STREAM, 0, c.streamId, u32(H2Code.REFUSED_STREAM));
      return;
    }
    const s = new H2ServerStream(this, c.streamId, headers, this.peerInitialWindow);
    this.streams.set(s.id, s);
    this.onStream(s);
    if (c.flags & END_STREAM) this.remoteEnd(s);
  }

  private onSettings(streamId: number, flags: number, payload: Buffer): void {
    if (streamId !== 0) throw new ConnectionError(H2Code.PROTOCOL_ERROR, 'SETTINGS on a stream');
    if (flags & ACK) {
      if (payload.length !== 0)
        throw new ConnectionError(H2Code.FRAME_SIZE_ERROR, 'SETTINGS ack with a payload');
      return;
    }
    if (payload.length % 6 !== 0) throw new ConnectionError(H2Code.FRAME_SIZE_ERROR, 'SETTINGS size');
    for (let i = 0; i < payload.length; i += 6) {
      const id = payload.readUInt16BE(i);
      const value = payload.readUInt32BE(i + 2);
      if (id === 0x4) {
        if (value > MAX_WINDOW)
          throw new ConnectionError(H2Code.FLOW_CONTROL_ERROR, 'initial window too large');
        const delta = value - this.peerInitialWindow;
        this.peerInitialWindow = value;
        for (const s of this.streams.values()) s.sendWindow += delta;
      } else if (id === 0x5) {
        if (value < 16384 || value > 16777215)
          throw new ConnectionError(H2Code.PROTOCOL_ERROR, 'invalid SETTINGS_MAX_FRAME_SIZE');
        this.peerMaxFrame = value;
      } else if (id === 0x2 && value > 1) {
        throw new ConnectionError(H2Code.PROTOCOL_ERROR, 'invalid SETTINGS_ENABLE_PUSH');
      }
      // Header table size: this side's encoder never indexes, so any bound is already kept.
    }
    this.sendFrame(T.SETTINGS, ACK, 0, Buffer.alloc(0));
    this.pump();
  }

  private onWindowUpdate(streamId: number, payload: Buffer): void {
    if (payload.length !== 4) throw new ConnectionError(H2Code.FRAME_SIZE_ERROR, 'WINDOW_UPDATE size');
    const inc = payload.readUInt32BE(0) & 0x7fffffff;
    if (streamId === 0) {
      if (inc === 0) throw new ConnectionError(H2Code.PROTOCOL_ERROR, 'WINDOW_UPDATE of 0');
      this.connSendWindow += inc;
      if (this.connSendWindow > MAX_WINDOW)
        throw new ConnectionError(H2Code.FLOW_CONTROL_ERROR, 'window overflow');
    } else {
      const s = this.streams.get(streamId);
      if (!s) return;
      if (inc === 0 || s.sendWindow + inc > MAX_WINDOW) {
        this.resetStream(s, inc === 0 ? H2Code.PROTOCOL_ERROR : H2Code.FLOW_CONTROL_ERROR);
        return;
      }
      s.sendWindow += inc;
    }
    this.pump();
  }

  private remoteEnd(s: H2ServerStream): void {
    if (s.remoteEnded) return;
    s.remoteEnded = true;
    s.handlers?.end();
    if (s.localEnded && s.queue.length === 0 && !s.trailers) this.forgetQuietly(s);
  }

  // ---- input buffer -------------------------------------------------------------------------

  private peekHeader(): Buffer {
    const first = this.input[0] as Buffer;
    if (first.length >= FRAME_HEADER) return first.subarray(0, FRAME_HEADER);
    return Buffer.concat(this.input, Math.min(this.inputBytes, 64)).subarray(0, FRAME_HEADER);
  }

  private skip(n: number): void {
    this.inputBytes -= n;
    shiftBytes(this.input, n, () => undefined);
  }

  /** The next n bytes as views of the chunks they are in. */
  private takeViews(n: number): Buffer[] {
    const views: Buffer[] = [];
    this.inputBytes -= n;
    shiftBytes(this.input, n, (view) => views.push(view));
    return views;
  }

  private take(n: number): Buffer {
    const views = this.takeViews(n);
    return views.length === 1 ? (views[0] as Buffer) : Buffer.concat(views, n);
  }

  // ---- sending ------------------------------------------------------------------------------

  windowUpdate(streamId: number, increment: number): void {
    this.sendFrame(T.WINDOW_UPDATE, 0, streamId, u32(increment));
  }

  sendHeaders(streamId: number, headers: HeaderList, endStream: boolean): void {
    const block = encodeHeaders(headers);
    let pos = 0;
    let first = true;
    do {
      const piece = block.subarray(pos, pos + this.peerMaxFrame);
      pos += piece.length;
      const last = pos >= block.length;
      const type = first ? T.HEADERS : T.CONTINUATION;
      const flags = (last ? END_HEADERS : 0) | (first && endStream ? END_STREAM : 0);
      this.sendFrame(type, flags, streamId, piece);
      first = false;
    } while (pos < block.length);
  }

  resetStream(s: H2ServerStream, code: number): void {
    this.sendFrame(T.RST_STREAM, 0, s.id, u32(code));
    this.forget(s, `stream reset (code ${code})`);
  }

  /** Sends what the windows allow, stream by stream, then trailers of streams with nothing left. */
  pump(): void {
    if (this.closed) return;
    // Streams in the order they opened; one that ends here leaves the map, which iteration allows.
    for (const s of this.streams.values()) {
      while (s.queue.length > 0 && !this.blocked) {
        const o = s.queue[0] as Outgoing;
        const room = Math.min(s.sendWindow, this.connSendWindow);
        if (room <= 0) break;
        this.sendData(s, o, Math.min(room, o.bytes));
        if (o.bytes === 0) {
          s.queue.shift();
          o.done?.();
        }
      }
      if (s.queue.length === 0 && s.trailers) {
        const trailers = s.trailers;
        s.trailers = undefined;
        this.sendHeaders(s.id, trailers, true);
        this.streamLocalEnded(s);
      }
    }
  }

  /** Sends `n` bytes from the front of `o` as DATA frames, taking them off it. */
  private sendData(s: H2ServerStream, o: Outgoing, n: number): void {
    s.sendWindow -= n;
    this.connSendWindow -= n;
    o.bytes -= n;
    while (n > 0) {
      const size = Math.min(n, this.peerMaxFrame);
      n -= size;
      this.queueOut(frameHeader(size, T.DATA, 0, s.id));
      shiftBytes(o.parts, size, (view) => this.queueOut(view));
    }
  }

  /** This side of `s` has ended (trailers sent): the stream is done. */
  streamLocalEnded(s: H2ServerStream): void {
    if (!s.remoteEnded) {
      // As gRPC servers do: the answer is complete, so the peer's unfinished side is not wanted,
      // and for the application the requests end here.
      this.sendFrame(T.RST_STREAM, 0, s.id, u32(H2Code.NO_ERROR));
      s.remoteEnded = true;
      s.handlers?.end();
    }
    this.forgetQuietly(s);
  }

  private forgetQuietly(s: H2ServerStream): void {
    s.closed = true;
    this.streams.delete(s.id);
  }

  private forget(s: H2ServerStream, reason: string): void {
    if (s.closed) return;
    this.forgetQuietly(s);
    for (const o of s.queue) o.done?.();
    s.queue.length = 0;
    s.handlers?.abort(reason);
  }

  private fail(code: number, message: string): void {
    if (this.closed) return;
    const debug = Buffer.from(message.slice(0, 200));
    const payload = Buffer.alloc(8 + debug.length);
    payload.writeUInt32BE(this.lastStreamId, 0);
    payload.writeUInt32BE(code, 4);
    debug.copy(payload, 8);
    this.sendFrame(T.GOAWAY, 0, 0, payload);
    this.flush();
    this.close(`HTTP/2 protocol error: ${message}`);
  }

  private sendFrame(type: number, flags: number, streamId: number, payload: Buffer): void {
    this.outFrames++;
    this.queueOut(frameHeader(payload.length, type, flags, streamId));
    if (payload.length > 0) this.queueOut(payload);
  }

  private queueOut(buf: Buffer): void {
    if (this.closed) return;
    this.out.push(buf);
    if (!this.flushScheduled) {
      this.flushScheduled = true;
      process.nextTick(() => this.flush());
    }
  }

  /** Writes what queued up in this tick in one corked batch (one writev on a socket). */
  private flush(): void {
    this.flushScheduled = false;
    const out = this.out;
    if (out.length === 0 || this.socket.destroyed) return;
    this.out = [];
    const frames = this.outFrames;
    this.outFrames = 0;
    this.unsentFrames += frames;
    this.socket.cork();
    const last = out.length - 1;
    for (let i = 0; i < last; i++) this.socket.write(out[i] as Buffer);
    // Called once the batch is with the system (a peer that reads nothing never lets it go).
    const ok = this.socket.write(out[last] as Buffer, () => {
      this.unsentFrames -= frames;
    });
    this.socket.uncork();
    if (!ok) this.blocked = true;
  }
}

/** Takes `n` bytes off the front of `queue`, handing them to `take` as views (no copy). */
function shiftBytes(queue: Buffer[], n: number, take: (view: Buffer) => void): void {
  while (n > 0) {
    const first = queue[0] as Buffer;
    if (first.length <= n) {
      take(first);
      queue.shift();
      n -= first.length;
    } else {
      take(first.subarray(0, n));
      queue[0] = first.subarray(n);
      n = 0;
    }
  }
}

function frameHeader(length: number, type: number, flags: number, streamId: number): Buffer {
  const h = Buffer.allocUnsafe(FRAME_HEADER);
  h.writeUIntBE(length, 0, 3);
  h[3] = type;
  h[4] = flags;
  h.writeUInt32BE(streamId, 5);
  return h;
}

function u32(n: number): Buffer {
  const b = Buffer.allocUnsafe(4);
  b.writeUInt32BE(n, 0);
  return b;
}

function settingsPayload(settings: Array<[number, number]>): Buffer {
  const b = Buffer.alloc(6 * settings.length);
  settings.forEach(([id, value], i) => {
    b.writeUInt16BE(id, 6 * i);
    b.writeUInt32BE(value, 6 * i + 2);
  });
  return b;
}
