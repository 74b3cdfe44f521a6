import { createHash, randomBytes } from 'node:crypto';
import type { Duplex } from 'node:stream';
import { HEALTH_SERVING } from '../wire/messages.js';
import { credentials, type RegistryAuth } from './auth.js';
import { CONTENT_METHODS, type ContentStore, contentHandlers } from './content.js';
import { type ExportSink, fileSendDiffCopy } from './filesend.js';
import { fileSyncDiffCopy, type LocalDir } from './filesync.js';
import { type MethodDefinition, SessionServer } from './grpc-server.js';
import { getSecret, type Secrets } from './secrets.js';

const identity = (b: Buffer) => b;

function method(path: string, streaming: boolean): MethodDefinition {
  return {
    path,
    requestStream: streaming,
    responseStream: streaming,
    requestDeserialize: identity,
    responseSerialize: identity,
  };
}

const FILESYNC_DIFFCOPY = '/moby.filesync.v1.FileSync/DiffCopy';
const FILESEND_DIFFCOPY = '/moby.filesync.v1.FileSend/DiffCopy';
const HEALTH_CHECK = '/grpc.health.v1.Health/Check';
const SECRETS_GET = '/moby.buildkit.secrets.v1.Secrets/GetSecret';
const AUTH_CREDENTIALS = '/moby.filesync.v1.Auth/Credentials';

/**
 * The daemon pushes the whole export through the session, and HTTP/2's default window of 64 KiB
 * makes it wait for a round trip every 64 KiB (measured: 512 MiB took 4.6 s instead of 2.6 s).
 * The window also bounds what a slow consumer makes us buffer: 2 MiB exported as fast as 8 MiB
 * did, and holds a quarter as much while the sink (a disk that is busy syncing) lags.
 */
const SESSION_STREAM_WINDOW = 2 * 1024 * 1024;

export interface SessionOptions {
  name?: string;
  /** Same key across builds of the same directory lets BuildKit reuse what it already has. */
  sharedKey?: string;
  localDirs?: Record<string, string | LocalDir>;
  exportSink?: ExportSink;
  /** Served to `RUN --mount=type=secret`; the Secrets service is hosted only when given. */
  secrets?: Secrets;
  /** Registry credentials for pulls and pushes; the Auth service is hosted only when given. */
  registryAuth?: RegistryAuth;
  /**
   * Content stores BuildKit may read and write over the session, by id (`local:<name>` for a
   * `type=local` cache's `src`/`dest=<name>`); the Content service is hosted only when given.
   */
  contentStores?: ReadonlyMap<string, ContentStore>;
}

/**
 * The client side of a BuildKit session: a gRPC *server* (FileSync, FileSend, Secrets, Auth, Health) that
 * the daemon calls back over one connection opened by the client.
 */
export class Session {
  readonly id = newSessionId();
  readonly name: string;
  readonly sharedKey: string;
  private readonly server = new SessionServer({
    // What the daemon sends the session (export bytes, file requests) comes in small messages;
    // one larger than buildctl's client bound is not from a daemon that means well.
    maxReceiveMessageBytes: 16 * 1024 * 1024,
    streamWindow: SESSION_STREAM_WINDOW,
  });
  private readonly exportsDone: Array<Promise<void>> = [];
  private failTransfer: (err: Error) => void = () => undefined;
  /**
   * Settles with the first local directory transfer that failed on this side (a walk or read
   * error), never otherwise: the solve waits on BuildKit only a bounded time after it.
   */
  readonly transferFailed = new Promise<Error>((resolve) => {
    this.failTransfer = resolve;
  });

  constructor(opts: SessionOptions = {}) {
    this.name = opts.name ?? 'kiln-buildkit-client';
    const dirs = new Map<string, LocalDir>();
    for (const [name, d] of Object.entries(opts.localDirs ?? {}))
      dirs.set(name, typeof d === 'string' ? { path: d } : d);
    this.sharedKey =
      opts.sharedKey ??
      createHash('sha256')
        .update([...dirs.values()].map((d) => d.path).join('\0'))
        .digest('hex');

    if (dirs.size > 0) {
      this.server.addMethod(
        method(FILESYNC_DIFFCOPY, true),
        fileSyncDiffCopy(dirs, (dirName, err) =>
          this.failTransfer(
            new Error(`error from sender: ${err.message} (local directory "${dirName}")`, { cause: err }),
          ),
        ),
      );
    }
    if (opts.exportSink) {
      this.server.addMethod(
        method(FILESEND_DIFFCOPY, true),
        fileSendDiffCopy(opts.exportSink, (done) => {
          done.catch(() => undefined);
          this.exportsDone.push(done);
        }),
      );
    }
    if (opts.secrets) this.server.addMethod(method(SECRETS_GET, false), getSecret(opts.secrets));
    if (opts.contentStores && opts.contentStores.size > 0) {
      const handlers = contentHandlers(opts.contentStores);
      for (const [name, def] of Object.entries(CONTENT_METHODS)) {
        const handler = handlers[name];
        if (handler) this.server.addMethod(def, handler);
      }
    }
    if (opts.registryAuth)
      this.server.addMethod(method(AUTH_CREDENTIALS, false), credentials(opts.registryAuth));
    // BuildKit polls Health/Check every second and drops the session (and the build) without it.
    this.server.addMethod(method(HEALTH_CHECK, false), (_call, cb) => cb(null, HEALTH_SERVING));
  }

  /** Headers announcing this session: HTTP headers on `/session`, request headers (gRPC metadata) on Control.Session. */
  headers(): Array<[string, string]> {
    return [
      ['X-Docker-Expose-Session-Uuid', this.id],
      ['X-Docker-Expose-Session-Name', this.name],
      ['X-Docker-Expose-Session-Sharedkey', this.sharedKey],
      ...this.server.methodPaths.map((m): [string, string] => ['X-Docker-Expose-Session-Grpc-Method', m]),
    ];
  }

  /** Serves the session over a connection on which the daemon is the HTTP/2 client. */
  serve(connection: Duplex): void {
    this.server.serve(connection);
  }

  /** Resolves when every export the daemon started has been fully received. */
  async exportsSettled(): Promise<void> {
    await Promise.all(this.exportsDone);
  }

  close(): void {
    this.server.close();
  }
}

/** 25 base-36 characters, like BuildKit's identity.NewID. */
function newSessionId(): string {
  const bytes = randomBytes(17);
  let n = BigInt(`0x${bytes.toString('hex')}`);
  let id = '';
  for (let i = 0; i < 25; i++) {
    id += (n % 36n).toString(36);
    n /= 36n;
  }
  return id;
}
