import { Duplex, type Duplex as DuplexStream } from 'node:stream';
import { MessageDeframer, MessageTooLargeError, messagePrefix } from '../grpc/message-framing.js';
import { Metadata } from '../grpc/metadata.js';
import { status } from '../grpc/status.js';
import type { HeaderList } from '../h2/hpack.js';
import { H2Code, H2ServerConnection, type H2ServerStream } from '../h2/server-connection.js';

/**
 * The gRPC server a session hosts for the daemon, on the session's own HTTP/2 server
 * (h2/server-connection.ts) instead of grpc-js's: the export and the context cross it as
 * thousands of messages, and grpc-js's server copies and re-frames each one. Handlers get
 * calls shaped like grpc-js's (metadata, request, a Duplex of messages, 'cancelled'), plus
 * `fail(code, details)`, which ends a stream with an error status after what it already wrote.
 */

export interface MethodDefinition<Req = Buffer, Res = Buffer> {
  path: string;
  requestStream: boolean;
  responseStream: boolean;
  requestDeserialize(bytes: Buffer): Req;
  responseSerialize(message: Res): Buffer;
}

export interface ServiceError {
  code: number;
  details: string;
}

export interface UnaryCall<Req> {
  metadata: Metadata;
  request: Req;
}
export type UnaryCallback<Res> = (err: ServiceError | null, response?: Res) => void;
export type UnaryHandler<Req, Res> = (call: UnaryCall<Req>, callback: UnaryCallback<Res>) => void;
export type StreamHandler<Req, Res> = (call: ServerCall<Req, Res>) => void;

/** Any method's handler, whatever its message types. */
export type MethodHandler = UnaryHandler<never, unknown> | StreamHandler<never, never>;
interface Route {
  def: MethodDefinition<unknown, unknown>;
  handler: MethodHandler;
}

export interface SessionServerOptions {
  /** A message from the daemon larger than this fails its call (RESOURCE_EXHAUSTED). */
  maxReceiveMessageBytes: number;
  /** HTTP/2 receive window of each stream: what a slow handler lets the daemon send ahead. */
  streamWindow: number;
}

/** Received chunks smaller than this are copied together, into buffers of TAIL_BYTES. */
const SMALL_CHUNK = 1024;
const TAIL_BYTES = 16 * 1024;

const GRPC_HEADERS: HeaderList = [
  [':status', '200'],
  ['content-type', 'application/grpc'],
];
/** HTTP/2 and gRPC transport headers, kept out of a call's metadata as grpc-js keeps them. */
const NOT_METADATA = new Set(['te', 'content-type', 'grpc-timeout', 'grpc-encoding', 'grpc-accept-encoding']);

export class SessionServer {
  private readonly routes = new Map<string, Route>();
  private readonly connections = new Set<H2ServerConnection>();

  constructor(private readonly options: SessionServerOptions) {}

  addMethod(def: MethodDefinition<unknown, never>, handler: MethodHandler): void {
    if (def.requestStream && !def.responseStream)
      throw new Error(`${def.path}: client-streaming methods are not supported`);
    this.routes.set(def.path, { def: def as MethodDefinition<unknown, unknown>, handler });
  }

  get methodPaths(): string[] {
    return [...this.routes.keys()];
  }

  /** Serves gRPC on a connection on which the peer is the HTTP/2 client. */
  serve(socket: DuplexStream): void {
    const conn = new H2ServerConnection(
      socket,
      {
        streamWindow: this.options.streamWindow,
        connectionWindow: 2 * this.options.streamWindow,
        maxConcurrentStreams: 256,
        maxHeaderListBytes: 1024 * 1024,
      },
      (stream) => this.dispatch(stream),
    );
    this.connections.add(conn);
    socket.once('close', () => this.connections.delete(conn));
  }

  close(): void {
    for (const c of this.connections) c.destroy();
    this.connections.clear();
  }

  private dispatch(stream: H2ServerStream): void {
    const path = stream.header(':path') ?? '';
    const route = this.routes.get(path);
    if (stream.header(':method') !== 'POST' || !route) {
      stream.handlers = { data: () => undefined, end: () => undefined, abort: () => undefined };
      stream.endWithHeaders([
        ...GRPC_HEADERS,
        ...statusTrailers(status.UNIMPLEMENTED, `unknown method ${stream.header(':method')} ${path}`),
      ]);
      return;
    }
    const call = new ServerCall<unknown, unknown>(
      stream,
      route.def,
      metadataOf(stream.headers),
      this.options,
    );
    // A handler that throws fails its call; the daemon is not left waiting on it.
    const run = (start: () => void) => {
      try {
        start();
      } catch (err) {
        call.fail(status.INTERNAL, `the session's ${path} handler failed: ${(err as Error).message}`);
      }
    };
    if (route.def.requestStream) {
      run(() => (route.handler as unknown as StreamHandler<unknown, unknown>)(call));
      return;
    }
    // Unary and server-streaming: the one request message comes first.
    call.once('data', (request: unknown) => {
      call.pause();
      call.request = request;
      if (route.def.responseStream) {
        run(() => (route.handler as unknown as StreamHandler<unknown, unknown>)(call));
      } else {
        run(() =>
          (route.handler as unknown as UnaryHandler<unknown, unknown>)(
            call as UnaryCall<unknown>,
            (err, response) => {
              if (err) call.fail(err.code, err.details);
              else call.end(response);
            },
          ),
        );
      }
    });
    call.once('end', () => {
      if (call.request === undefined) call.fail(status.INTERNAL, 'the request has no message');
    });
  }
}

/** One call: its readable side yields the request messages, its writable side takes the responses. */
export class ServerCall<Req = Buffer, Res = Buffer> extends Duplex {
  request: Req = undefined as Req;
  /**
   * What the peer sent and the reader has not taken yet, kept as the bytes received and credited
   * back only as the reader takes messages: the stream window bounds it, however long the
   * handler stays paused. Messages decoded ahead of the reader would not be bounded by it (2 MiB
   * of empty messages is 400,000 of them), nor would a message larger than the window, which is
   * credited as it is read only while the reader waits for it. Small chunks are copied together
   * into `tail`, or as many tiny DATA frames would be as many buffers.
   */
  private readonly input: Buffer[] = [];
  private tail: { buf: Buffer; used: number } | undefined;
  /** The deframer's pass over the chunk taken last, and its size, credited once the pass is done. */
  private pass: { messages: Generator<Buffer>; bytes: number } | undefined;
  private reading = false;
  private requestsEnded = false;
  private readonly deframer: MessageDeframer;
  private statusToSend: ServiceError = { code: status.OK, details: '' };
  private cancelled = false;
  /** The request stream broke (a bad message): nothing after it is read. */
  private inputFailed = false;

  constructor(
    private readonly stream: H2ServerStream,
    private readonly def: MethodDefinition<Req, Res>,
    readonly metadata: Metadata,
    options: SessionServerOptions,
  ) {
    // A count of messages, not bytes: four 1 MiB file packets at most wait behind the stream.
    // Messages that queue while it sends (or while a sender corks the call) go in one write
    // (_writev), so that small ones, a file's last DATA packet and its end, share frames.
    super({ objectMode: true, readableHighWaterMark: 1, writableHighWaterMark: 4 });
    this.deframer = new MessageDeframer(options.maxReceiveMessageBytes);
    // Handlers listen for what they need; a cancelled call must not crash the process for want of a listener.
    this.on('error', () => undefined);
    stream.handlers = {
      data: (chunk) => this.onChunk(chunk),
      end: () => this.endRequests(),
      abort: (reason) => {
        if (this.cancelled) return;
        this.cancelled = true;
        this.emit('cancelled', reason);
        // What arrived before the reset is still delivered (a daemon may send its last packet
        // and cancel at once); then the requests end and the call closes.
        this.endRequests();
        if (this.readableEnded) this.destroy();
        else this.once('end', () => this.destroy());
      },
    };
  }

  private onChunk(chunk: Buffer): void {
    if (this.inputFailed) {
      this.stream.consumed(chunk.length);
      return;
    }
    // A reader that takes everything (reading) has left nothing queued: nothing to gather.
    if (this.reading) {
      this.input.push(chunk);
    } else if (chunk.length >= SMALL_CHUNK) {
      this.closeTail();
      // Kept while the reader is paused: not as a view that keeps a much larger read buffer alive.
      this.input.push(chunk.length * 2 < chunk.buffer.byteLength ? Buffer.from(chunk) : chunk);
    } else {
      if (this.tail && this.tail.used + chunk.length > this.tail.buf.length) this.closeTail();
      this.tail ??= { buf: Buffer.allocUnsafe(TAIL_BYTES), used: 0 };
      chunk.copy(this.tail.buf, this.tail.used);
      this.tail.used += chunk.length;
    }
    this.deliver();
  }

  private closeTail(): void {
    const tail = this.tail;
    if (!tail) return;
    const used = tail.buf.subarray(0, tail.used);
    // Mostly empty (a small chunk, then a large one): its size, not TAIL_BYTES, is kept.
    this.input.push(tail.used * 2 < tail.buf.length ? Buffer.from(used) : used);
    this.tail = undefined;
  }

  /** The next whole message, or undefined until more arrives; what the deframer used up is credited. */
  private nextMessage(): Req | undefined {
    try {
      for (;;) {
        if (this.pass) {
          const next = this.pass.messages.next();
          if (!next.done) return this.def.requestDeserialize(next.value);
          this.stream.consumed(this.pass.bytes);
          this.pass = undefined;
        }
        this.closeTail();
        const chunk = this.input.shift();
        if (!chunk) return undefined;
        this.pass = { messages: this.deframer.messages(chunk), bytes: chunk.length };
      }
    } catch (err) {
      // The status goes out, then the stream is reset: the peer's unread rest is not wanted.
      this.inputFailed = true;
      const tooLarge = err instanceof MessageTooLargeError;
      this.fail(tooLarge ? status.RESOURCE_EXHAUSTED : status.INTERNAL, (err as Error).message);
      this.closeTail();
      let unread = this.pass?.bytes ?? 0;
      for (const c of this.input) unread += c.length;
      this.pass = undefined;
      this.input.length = 0;
      this.stream.consumed(unread);
      return undefined;
    }
  }

  private endRequests(): void {
    this.requestsEnded = true;
    this.deliver();
  }

  private deliver(): void {
    while (this.reading && !this.inputFailed) {
      const message = this.nextMessage();
      if (message === undefined) break;
      this.reading = this.push(message);
    }
    const drained = !this.pass && this.input.length === 0 && !this.tail;
    if (this.requestsEnded && drained && !this.readableEnded) {
      if (!this.inputFailed && !this.deframer.atBoundary)
        this.fail(status.INTERNAL, 'the request ended inside a message');
      this.push(null);
    }
  }

  override _read(): void {
    this.reading = true;
    this.deliver();
  }

  override _write(message: Res, _enc: BufferEncoding, callback: (err?: Error | null) => void): void {
    this.send([message], callback);
  }

  override _writev(chunks: Array<{ chunk: Res }>, callback: (err?: Error | null) => void): void {
    this.send(
      chunks.map((c) => c.chunk),
      callback,
    );
  }

  /** The messages, each behind its 5-byte prefix, in one write to the stream. */
  private send(messages: Res[], callback: (err?: Error | null) => void): void {
    const parts: Buffer[] = [];
    try {
      for (const message of messages) {
        const body = this.def.responseSerialize(message);
        parts.push(messagePrefix(body.length), body);
      }
    } catch (err) {
      callback(err as Error);
      return;
    }
    this.stream.respond(GRPC_HEADERS);
    this.stream.write(parts, () => callback());
  }

  override _final(callback: (err?: Error | null) => void): void {
    const { code, details } = this.statusToSend;
    if (this.stream.respondedHeaders) this.stream.end(statusTrailers(code, details));
    else this.stream.endWithHeaders([...GRPC_HEADERS, ...statusTrailers(code, details)]);
    callback();
  }

  override _destroy(err: Error | null, callback: (err?: Error | null) => void): void {
    // Destroyed before its status went out: the peer learns the stream is over.
    if (!this.writableFinished) this.stream.reset(H2Code.CANCEL);
    callback(err);
  }

  /** Ends the call with an error status, after the responses already written. */
  fail(code: number, details: string): void {
    if (this.destroyed || this.writableEnded) return;
    this.statusToSend = { code, details };
    this.end();
  }
}

function statusTrailers(code: number, details: string): HeaderList {
  const trailers: HeaderList = [['grpc-status', String(code)]];
  if (details) trailers.push(['grpc-message', encodeGrpcMessage(details.slice(0, 8192))]);
  return trailers;
}

/** gRPC's percent-encoding of grpc-message: UTF-8, with bytes outside printable ASCII and '%' escaped. */
function encodeGrpcMessage(text: string): string {
  let out = '';
  for (const b of Buffer.from(text, 'utf8')) {
    out +=
      b >= 0x20 && b <= 0x7e && b !== 0x25
        ? String.fromCharCode(b)
        : `%${b.toString(16).toUpperCase().padStart(2, '0')}`;
  }
  return out;
}

function metadataOf(headers: HeaderList): Metadata {
  const md = new Metadata();
  for (const [name, value] of headers) {
    if (name.startsWith(':') || NOT_METADATA.has(name)) continue;
    if (name.endsWith('-bin')) md.add(name, Buffer.from(value, 'base64'));
    // HPACK carries octets: a UTF-8 value (a path in an old daemon's followpaths) decodes as such.
    else md.add(name, Buffer.from(value, 'latin1').toString('utf8'));
  }
  return md;
}
