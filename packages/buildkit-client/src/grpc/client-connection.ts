import http2 from 'node:http2';
import type { Duplex } from 'node:stream';
import { Readable } from 'node:stream';
import { frameMessage, MessageDeframer, MessageTooLargeError } from './message-framing.js';
import { GrpcError, status } from './status.js';

/**
 * A gRPC client on node:http2 for the calls this package makes: unary and server-streaming,
 * uncompressed, without deadlines. It replaced grpc-js, whose load balancing, resolvers,
 * retries and channelz a client of one daemon has no use for, and whose loading alone was a
 * sixth of every bkctl command's start-up.
 */

/** Opens a byte connection to the daemon (unix, TCP or TLS socket, or an upgraded one). */
export interface Dialer {
  connect: () => Duplex;
  /** `https:` when `connect` gives a TLS socket; only the request's :scheme and :authority. */
  origin: string;
}

export interface GrpcConnectionOptions {
  /** A larger message from the daemon fails its call (RESOURCE_EXHAUSTED). */
  maxReceiveMessageBytes: number;
  /** HTTP/2 receive window of the connection and of each stream. */
  windowBytes: number;
  /** PINGs while calls are in progress (KeepaliveOptions); none without it. */
  keepalive?: KeepaliveOptions;
}

/**
 * A daemon that stops answering (frozen, or cut off without a reset) leaves calls waiting for
 * ever; a PING every `intervalMs` while calls are in progress, unanswered for `timeoutMs`, ends
 * the connection and fails its calls with UNAVAILABLE. gRPC servers in Go answer a client that
 * pings more often than every 5 minutes while they send nothing with GOAWAY (too_many_pings)
 * unless configured otherwise; BuildKit configures nothing, so intervals of 5 minutes or more
 * are safe with any daemon.
 */
export interface KeepaliveOptions {
  intervalMs: number;
  timeoutMs: number;
}

/** A call in progress: its messages as an object-mode Readable, which errors with a GrpcError. */
export class ClientCall<Res> extends Readable {
  private readonly deframer: MessageDeframer;
  private req: http2.ClientHttp2Stream | undefined;
  private result: { code: number; details: string } | undefined;

  /** @internal GrpcConnection makes calls. */
  constructor(
    private readonly h2: http2.ClientHttp2Session,
    path: string,
    request: Buffer,
    private readonly decode: (bytes: Buffer) => Res,
    metadata: Record<string, string>,
    maxReceiveMessageBytes: number,
  ) {
    super({ objectMode: true });
    this.deframer = new MessageDeframer(maxReceiveMessageBytes);
    let req: http2.ClientHttp2Stream;
    try {
      const headers: http2.OutgoingHttpHeaders = {};
      for (const [key, value] of Object.entries(metadata)) headers[key.toLowerCase()] = value;
      req = h2.request({
        ...headers,
        ':method': 'POST',
        ':path': path,
        'content-type': 'application/grpc',
        te: 'trailers',
      });
    } catch (err) {
      // A session closing under us, or metadata HTTP/2 cannot carry.
      process.nextTick(() => this.fail(status.UNAVAILABLE, (err as Error).message, err));
      return;
    }
    this.req = req;
    req.on('response', (headers) => this.onHeaders(headers));
    req.on('trailers', (trailers) => this.onStatus(trailers));
    req.on('data', (chunk: Buffer) => this.onData(chunk));
    req.on('end', () => this.onEnd());
    req.on('error', (err: Error) => this.onGone(err));
    req.on('close', () => this.onGone());
    req.end(frameMessage(request));
  }

  /** Ends the call from this side; the Readable errors with CANCELLED. */
  cancel(): void {
    this.fail(status.CANCELLED, 'cancelled on the client');
  }

  override _read(): void {
    if (this.req?.isPaused()) this.req.resume();
  }

  override _destroy(err: Error | null, cb: (err?: Error | null) => void): void {
    if (this.req && !this.req.closed) this.req.close(http2.constants.NGHTTP2_CANCEL);
    cb(err);
  }

  private onHeaders(headers: http2.IncomingHttpHeaders): void {
    const httpStatus = Number(headers[':status']);
    if (httpStatus !== 200) {
      this.fail(codeForHttpStatus(httpStatus), `the daemon answered HTTP ${httpStatus}`);
      return;
    }
    const type = String(headers['content-type'] ?? '');
    if (!type.startsWith('application/grpc')) {
      this.fail(status.UNKNOWN, `the daemon answered with content-type "${type}", not gRPC`);
      return;
    }
    // A status in the response headers is a trailers-only answer: the call failed at once.
    if (headers['grpc-status'] !== undefined) this.onStatus(headers);
  }

  private onStatus(headers: http2.IncomingHttpHeaders): void {
    const code = Number(headers['grpc-status']);
    const message = headers['grpc-message'];
    this.result = {
      code: Number.isInteger(code) && code >= 0 && code <= 16 ? code : status.UNKNOWN,
      details: typeof message === 'string' ? decodeGrpcMessage(message) : '',
    };
  }

  private onData(chunk: Buffer): void {
    if (this.destroyed) return;
    try {
      for (const message of this.deframer.messages(chunk))
        if (!this.push(this.decode(message))) this.req?.pause();
    } catch (err) {
      const tooLarge = err instanceof MessageTooLargeError;
      this.fail(
        tooLarge ? status.RESOURCE_EXHAUSTED : status.INTERNAL,
        tooLarge ? (err as Error).message : `cannot read the daemon's answer: ${(err as Error).message}`,
        err,
      );
    }
  }

  private onEnd(): void {
    const result = this.result;
    if (result === undefined) this.onGone();
    else if (result.code !== status.OK) this.fail(result.code, result.details, undefined, true);
    else if (!this.deframer.atBoundary) this.fail(status.INTERNAL, 'the answer ended inside a message');
    else if (!this.destroyed) this.push(null);
  }

  /** The stream ended without a status: its connection went away, or the daemon reset it. */
  private onGone(err?: Error): void {
    const rst = this.req?.rstCode ?? http2.constants.NGHTTP2_NO_ERROR;
    if (this.h2.destroyed || this.h2.closed) {
      this.fail(status.UNAVAILABLE, err?.message ?? 'the connection to the daemon closed', err);
    } else if (rst !== http2.constants.NGHTTP2_NO_ERROR) {
      this.fail(codeForReset(rst), `the daemon reset the stream (HTTP/2 error ${rst})`, err);
    } else if (err) {
      this.fail(status.UNAVAILABLE, err.message, err);
    } else {
      this.fail(status.INTERNAL, 'the daemon ended the call without a gRPC status');
    }
  }

  private fail(code: number, details: string, cause?: unknown, sentByPeer = false): void {
    if (this.destroyed || this.readableEnded) return;
    this.destroy(new GrpcError(code, details, { ...(cause === undefined ? {} : { cause }), sentByPeer }));
  }
}

/**
 * One HTTP/2 connection to the daemon, dialed on first use and again after it is lost (a
 * restarted daemon is reached by the next call, as grpc-js's channel did).
 */
export class GrpcConnection {
  private h2: http2.ClientHttp2Session | undefined;
  /** Sessions the daemon has sent its SETTINGS on: something that is not an HTTP/2 server never does. */
  private readonly answered = new WeakSet<http2.ClientHttp2Session>();
  /**
   * Calls in progress per connection: a connection holds the process open only while it has
   * some, so a program that forgets close() still exits, as it did with grpc-js.
   */
  private readonly active = new WeakMap<http2.ClientHttp2Session, number>();
  private readonly keepalives = new WeakMap<http2.ClientHttp2Session, NodeJS.Timeout>();
  private closed = false;

  constructor(
    private readonly dialer: Dialer,
    private readonly options: GrpcConnectionOptions,
  ) {}

  /**
   * Resolves once the daemon has answered with its HTTP/2 settings; tries again (backing off
   * up to 1 s) until `deadline` (ms since the epoch), then rejects with the last reason. A TLS
   * refusal (a certificate that does not verify, a handshake the daemon rejects) fails at once:
   * trying again cannot change it.
   */
  async ready(deadline: number): Promise<void> {
    let delay = 50;
    for (;;) {
      if (this.closed) throw new GrpcError(status.UNAVAILABLE, 'the connection is closed');
      const h2 = this.session();
      this.hold(h2);
      try {
        await this.settled(h2, deadline);
        return;
      } catch (err) {
        if (this.closed || isTlsRefusal(err) || Date.now() + delay >= deadline) throw err;
      } finally {
        this.release(h2);
      }
      await new Promise((resolve) => setTimeout(resolve, delay));
      delay = Math.min(delay * 2, 1000);
    }
  }

  unary<Req, Res>(
    path: string,
    encode: (req: Req) => Buffer,
    decode: (bytes: Buffer) => Res,
    request: Req,
    metadata: Record<string, string> = {},
  ): { response: Promise<Res>; cancel: () => void } {
    const call = this.serverStream(path, encode, decode, request, metadata);
    const response = new Promise<Res>((resolve, reject) => {
      const messages: Res[] = [];
      call.on('data', (message: Res) => messages.push(message));
      call.on('error', reject);
      call.on('end', () => {
        const [first] = messages;
        if (messages.length === 1) resolve(first as Res);
        else reject(new GrpcError(status.INTERNAL, `a unary call answered ${messages.length} messages`));
      });
    });
    return { response, cancel: () => call.cancel() };
  }

  serverStream<Req, Res>(
    path: string,
    encode: (req: Req) => Buffer,
    decode: (bytes: Buffer) => Res,
    request: Req,
    metadata: Record<string, string> = {},
  ): ClientCall<Res> {
    const h2 = this.session();
    this.hold(h2);
    const call = new ClientCall(
      h2,
      path,
      encode(request),
      decode,
      metadata,
      this.options.maxReceiveMessageBytes,
    );
    call.once('close', () => this.release(h2));
    return call;
  }

  close(): void {
    this.closed = true;
    this.h2?.destroy();
    this.h2 = undefined;
  }

  private session(): http2.ClientHttp2Session {
    const live = this.h2;
    if (live && !live.closed && !live.destroyed) return live;
    const { windowBytes } = this.options;
    const h2 = http2.connect(this.dialer.origin, {
      createConnection: () => this.dialer.connect(),
      settings: { initialWindowSize: windowBytes },
    });
    // Failures reach the calls on it (their streams error) and ready(); a session with no
    // 'error' listener would take the process down.
    h2.on('error', () => {});
    h2.once('connect', () => {
      if (!h2.destroyed) h2.setLocalWindowSize(windowBytes);
    });
    h2.once('remoteSettings', () => this.answered.add(h2));
    const forget = () => {
      if (this.h2 === h2) this.h2 = undefined;
    };
    h2.once('close', () => clearInterval(this.keepalives.get(h2)));
    h2.once('close', forget);
    h2.once('goaway', forget);
    if (this.closed) h2.destroy();
    else this.h2 = h2;
    return h2;
  }

  private hold(h2: http2.ClientHttp2Session): void {
    const n = (this.active.get(h2) ?? 0) + 1;
    this.active.set(h2, n);
    if (n === 1 && !h2.destroyed) {
      h2.ref();
      this.startKeepalive(h2);
    }
  }

  private release(h2: http2.ClientHttp2Session): void {
    const n = (this.active.get(h2) ?? 1) - 1;
    this.active.set(h2, n);
    if (n === 0) {
      clearInterval(this.keepalives.get(h2));
      if (!h2.destroyed) h2.unref();
    }
  }

  private startKeepalive(h2: http2.ClientHttp2Session): void {
    const keepalive = this.options.keepalive;
    if (!keepalive) return;
    const { intervalMs, timeoutMs } = keepalive;
    // A session closing after a GOAWAY still carries its calls: it is pinged until it is gone.
    const ping = () => {
      if (h2.destroyed) return;
      const unanswered = setTimeout(() => {
        h2.destroy(new Error(`the daemon did not answer an HTTP/2 PING within ${timeoutMs} ms`));
      }, timeoutMs);
      unanswered.unref();
      try {
        // Answered, or cancelled as the connection closed: either way nothing is left to time.
        if (!h2.ping(() => clearTimeout(unanswered))) clearTimeout(unanswered);
      } catch {
        clearTimeout(unanswered);
      }
    };
    const timer = setInterval(ping, intervalMs);
    timer.unref();
    this.keepalives.set(h2, timer);
  }

  private settled(h2: http2.ClientHttp2Session, deadline: number): Promise<void> {
    if (this.answered.has(h2) && !h2.destroyed) return Promise.resolve();
    return new Promise((resolve, reject) => {
      const done = (err?: Error) => {
        clearTimeout(timer);
        h2.off('remoteSettings', onSettings);
        h2.off('error', onError);
        h2.off('close', onClose);
        if (err) reject(err);
        else resolve();
      };
      const onSettings = () => done();
      const onError = (err: Error) => done(new GrpcError(status.UNAVAILABLE, err.message, { cause: err }));
      const onClose = () => done(new GrpcError(status.UNAVAILABLE, 'the daemon closed the connection'));
      const timer = setTimeout(
        () => {
          h2.destroy();
          done(new GrpcError(status.UNAVAILABLE, 'no HTTP/2 answer before the deadline'));
        },
        Math.max(0, deadline - Date.now()),
      );
      h2.once('remoteSettings', onSettings);
      h2.once('error', onError);
      h2.once('close', onClose);
    });
  }
}

/** Node's codes for certificate checks and TLS alerts (OpenSSL's X509 names, ERR_TLS_*, ERR_SSL_*). */
const TLS_REFUSAL = /^(ERR_TLS_|ERR_SSL_|UNABLE_TO_|DEPTH_ZERO_|SELF_SIGNED_|CERT_|HOSTNAME_MISMATCH)/;

function isTlsRefusal(err: unknown): boolean {
  const code = ((err as Error).cause as NodeJS.ErrnoException | undefined)?.code;
  return typeof code === 'string' && TLS_REFUSAL.test(code);
}

/** gRPC's mapping of an HTTP status that is not 200 to a call status. */
function codeForHttpStatus(httpStatus: number): number {
  switch (httpStatus) {
    case 400:
      return status.INTERNAL;
    case 401:
      return status.UNAUTHENTICATED;
    case 403:
      return status.PERMISSION_DENIED;
    case 404:
      return status.UNIMPLEMENTED;
    case 429:
    case 502:
    case 503:
    case 504:
      return status.UNAVAILABLE;
    default:
      return status.UNKNOWN;
  }
}

/** gRPC's mapping of an RST_STREAM error code to a call status. */
function codeForReset(code: number): number {
  const c = http2.constants;
  switch (code) {
    case c.NGHTTP2_REFUSED_STREAM:
      return status.UNAVAILABLE;
    case c.NGHTTP2_CANCEL:
      return status.CANCELLED;
    case c.NGHTTP2_ENHANCE_YOUR_CALM:
      return status.RESOURCE_EXHAUSTED;
    case c.NGHTTP2_INADEQUATE_SECURITY:
      return status.PERMISSION_DENIED;
    default:
      return status.INTERNAL;
  }
}

/** grpc-message is percent-encoded UTF-8; a malformed escape is kept as it came. */
export function decodeGrpcMessage(text: string): string {
  try {
    return decodeURIComponent(text);
  } catch {
    return text;
  }
}
