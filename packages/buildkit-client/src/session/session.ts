import { createHash, randomBytes } from 'node:crypto';
import type { Duplex } from 'node:stream';
import * as grpc from '@grpc/grpc-js';
import { HEALTH_SERVING } from '../wire/messages.js';
import { credentials, type RegistryAuth } from './auth.js';
import {
  type ContentStore,
  contentHandlers,
  contentMethodPaths,
  contentServiceDefinition,
} from './content.js';
import { type ExportSink, fileSendDiffCopy } from './filesend.js';
import { fileSyncDiffCopy, type LocalDir } from './filesync.js';
import { getSecret, type Secrets } from './secrets.js';

const identity = (b: Buffer) => b;

function bidi(path: string): grpc.MethodDefinition<Buffer, Buffer> {
  return {
    path,
    requestStream: true,
    responseStream: true,
    requestSerialize: identity,
    requestDeserialize: identity,
    responseSerialize: identity,
    responseDeserialize: identity,
  };
}

const FILESYNC_DIFFCOPY = '/moby.filesync.v1.FileSync/DiffCopy';
const FILESEND_DIFFCOPY = '/moby.filesync.v1.FileSend/DiffCopy';
const HEALTH_CHECK = '/grpc.health.v1.Health/Check';
const SECRETS_GET = '/moby.buildkit.secrets.v1.Secrets/GetSecret';
const AUTH_CREDENTIALS = '/moby.filesync.v1.Auth/Credentials';

function unary(path: string): grpc.MethodDefinition<Buffer, Buffer> {
  return { ...bidi(path), requestStream: false, responseStream: false };
}

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
  private readonly server = new grpc.Server({
    // What the daemon sends the session (export bytes, file requests) comes in small messages;
    // one larger than buildctl's client bound is not from a daemon that means well.
    'grpc.max_receive_message_length': 16 * 1024 * 1024,
    'grpc.max_send_message_length': -1,
  });
  private readonly methods: string[] = [];
  private readonly exportsDone: Array<Promise<void>> = [];
  private injector: ReturnType<grpc.Server['createConnectionInjector']> | undefined;
  private connection: Duplex | undefined;
  private failTransfer: (err: Error) => void = () => undefined;
  /**
   * Settles with the first local directory transfer that failed on this side (a walk or read
   * error), never otherwise: the solve waits on BuildKit only a bounded time after it.
   */
  readonly transferFailed = new Promise<Error>((resolve) => {
    this.failTransfer = resolve;
  });
  /** Whether the HTTP/2 windows could be widened (false would mean a grpc-js change made sessions slow). */
  windowsWidened = false;

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
      this.server.addService(
        { DiffCopy: { ...bidi(FILESYNC_DIFFCOPY), originalName: 'diffCopy' } } as grpc.ServiceDefinition,
        {
          DiffCopy: fileSyncDiffCopy(dirs, (dirName, err) =>
            this.failTransfer(
              new Error(`error from sender: ${err.message} (local directory "${dirName}")`, { cause: err }),
            ),
          ),
        },
      );
      this.methods.push(FILESYNC_DIFFCOPY);
    }
    if (opts.exportSink) {
      this.server.addService({ DiffCopy: bidi(FILESEND_DIFFCOPY) } as grpc.ServiceDefinition, {
        DiffCopy: fileSendDiffCopy(opts.exportSink, (done) => {
          done.catch(() => undefined);
          this.exportsDone.push(done);
        }),
      });
      this.methods.push(FILESEND_DIFFCOPY);
    }
    if (opts.secrets) {
      this.server.addService({ GetSecret: unary(SECRETS_GET) } as grpc.ServiceDefinition, {
        GetSecret: getSecret(opts.secrets),
      });
      this.methods.push(SECRETS_GET);
    }
    if (opts.contentStores && opts.contentStores.size > 0) {
      this.server.addService(contentServiceDefinition(), contentHandlers(opts.contentStores));
      this.methods.push(...contentMethodPaths());
    }
    if (opts.registryAuth) {
      this.server.addService({ Credentials: unary(AUTH_CREDENTIALS) } as grpc.ServiceDefinition, {
        Credentials: credentials(opts.registryAuth),
      });
      this.methods.push(AUTH_CREDENTIALS);
    }
    // BuildKit polls Health/Check every second and drops the session (and the build) without it.
    this.server.addService({ Check: unary(HEALTH_CHECK) } as grpc.ServiceDefinition, {
      Check: (_call: unknown, cb: grpc.sendUnaryData<Buffer>) => cb(null, HEALTH_SERVING),
    });
    this.methods.push(HEALTH_CHECK);
  }

  /** Headers announcing this session: HTTP headers on `/session`, request headers (gRPC metadata) on Control.Session. */
  headers(): Array<[string, string]> {
    return [
      ['X-Docker-Expose-Session-Uuid', this.id],
      ['X-Docker-Expose-Session-Name', this.name],
      ['X-Docker-Expose-Session-Sharedkey', this.sharedKey],
      ...this.methods.map((m): [string, string] => ['X-Docker-Expose-Session-Grpc-Method', m]),
    ];
  }

  /** Serves the session over a connection on which the daemon is the HTTP/2 client. */
  serve(connection: Duplex): void {
    this.injector = this.server.createConnectionInjector(grpc.ServerCredentials.createInsecure());
    this.windowsWidened = widenFlowControlWindows(this.server);
    this.connection = connection;
    this.injector.injectConnection(connection);
  }

  /** Resolves when every export the daemon started has been fully received. */
  async exportsSettled(): Promise<void> {
    await Promise.all(this.exportsDone);
  }

  close(): void {
    this.injector?.destroy();
    this.connection?.destroy();
    this.server.forceShutdown();
  }
}

/**
 * The daemon pushes the whole export through this connection, and Node's HTTP/2 default of a
 * 64 KiB window makes it wait for a round trip every 64 KiB (measured: 512 MiB took 4.6 s
 * instead of 2.6 s). grpc-js offers no server option for the window, so reach the HTTP/2
 * server the injector just created. The window also bounds what a slow consumer makes us buffer:
 * 2 MiB exported as fast as 8 MiB did, and holds a quarter as much while the sink (a disk that is
 * busy syncing) lags.
 */
export const SESSION_STREAM_WINDOW = 2 * 1024 * 1024;

function widenFlowControlWindows(server: grpc.Server): boolean {
  const servers = (server as unknown as { http2Servers?: Map<import('node:http2').Http2Server, unknown> })
    .http2Servers;
  if (!(servers instanceof Map)) return false;
  for (const h2 of servers.keys()) {
    h2.on('session', (session) => {
      session.settings({ initialWindowSize: SESSION_STREAM_WINDOW });
      session.setLocalWindowSize(2 * SESSION_STREAM_WINDOW);
    });
  }
  return servers.size > 0;
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
