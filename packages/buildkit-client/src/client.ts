import { randomBytes } from 'node:crypto';
import { readFileSync, statSync } from 'node:fs';
import net from 'node:net';
import type { Duplex, Writable } from 'node:stream';
import tls from 'node:tls';
import { type BuildkitAddress, parseAddress } from './address.js';
import { ControlClient } from './control.js';
import {
  BuildkitConnectionError,
  BuildkitError,
  CanceledError,
  InvalidArgumentError,
  SolveError,
  UnsupportedError,
} from './errors.js';
import {
  type ClientCall,
  type Dialer,
  GrpcConnection,
  type KeepaliveOptions,
} from './grpc/client-connection.js';
import { GrpcError, status } from './grpc/status.js';
import type { RegistryAuth } from './session/auth.js';
import type { ContentStore } from './session/content.js';
import type { ExportSink } from './session/filesend.js';
import type { LocalDir } from './session/filesync.js';
import type { Secrets } from './session/secrets.js';
import { Session } from './session/session.js';
import { type StatusEvent, StatusTracker } from './status.js';
import { ControlSessionStream } from './transport/control-session-stream.js';
import { dockerUpgrade } from './transport/docker-upgrade.js';
import { startUpgradeProxy, type UpgradeProxy } from './transport/upgrade-proxy.js';
import type {
  SolveRequest,
  SolveResponse,
  StatusResponse,
  Timestamp,
  UsageRecord as WireUsageRecord,
} from './wire/control-messages.js';

export interface TlsOptions {
  /** PEM text or a file path. */
  ca?: string | Buffer;
  cert?: string | Buffer;
  key?: string | Buffer;
  /** Name to verify the server certificate against (buildctl's --tlsservername). */
  serverName?: string;
}

export interface ConnectOptions {
  tls?: TlsOptions;
  /** How long connect() may take before it gives up; default 5 s. */
  timeoutMs?: number;
  /**
   * How the session reaches the daemon: `control` tunnels it through Control.Session (works
   * everywhere), `upgrade` uses a Docker daemon's `POST /session` (docker:// only, ~3x faster).
   */
  sessionTransport?: 'control' | 'upgrade';
  /**
   * Largest gRPC message accepted from the daemon (default 16 MiB, buildctl's): a daemon, or
   * whatever answers at its address, cannot make the client buffer more than this at once.
   */
  maxReceiveMessageBytes?: number;
  /**
   * PINGs on the Control connection while calls are in progress, so that a daemon that stops
   * answering fails them instead of leaving a solve waiting for ever. Off by default; see
   * KeepaliveOptions for the interval daemons accept.
   */
  keepalive?: KeepaliveOptions;
}

/** How long BuildKit may take to end a build after a local context failed to send, before the client ends it. */
const SENDER_FAILURE_GRACE_MS = 5000;

/**
 * HTTP/2 receive window of the Control connection: Status streams a busy build's logs, and
 * 64 KiB would make the daemon wait a round trip every 64 KiB.
 */
const CONTROL_WINDOW_BYTES = 2 * 1024 * 1024;

/** buildctl's own bound on a message from the daemon (defaults.DefaultMaxRecvMsgSize). */
export const DEFAULT_MAX_RECEIVE_MESSAGE_BYTES = 16 * 1024 * 1024;

export type ByteExportType = 'tar' | 'oci' | 'docker';
export type ExportEntry =
  | {
      type: ByteExportType;
      attrs?: Record<string, string>;
      /** Receives the exporter's bytes; ended by the client when the export is complete. */
      output: Writable | ((metadata: Record<string, string>) => Writable | Promise<Writable>);
    }
  | { type: 'local'; attrs?: Record<string, string>; dir: string }
  | { type: string; attrs?: Record<string, string> };

export interface CacheEntry {
  type: string;
  attrs?: Record<string, string>;
}

export interface SolveOptions {
  /** Frontend name; `dockerfile.v0` builds a Dockerfile. */
  frontend: string;
  frontendAttrs?: Record<string, string>;
  /**
   * Local directories the frontend may ask for by name (`context`, `dockerfile`). Files go as
   * owned by 0:0, as buildctl and the docker CLI send them; `{ path, keepOwnership: true }`
   * sends the host's uid/gid instead.
   */
  localDirs?: Record<string, string | LocalDir>;
  /** At most one export: daemons before BuildKit v0.13 take a single exporter. */
  exports?: ExportEntry[];
  cacheImports?: CacheEntry[];
  cacheExports?: CacheEntry[];
  /** Reuse across builds of the same context so BuildKit sends only changed files. */
  sharedKey?: string;
  /**
   * Secrets for `RUN --mount=type=secret,id=ID`, served from this process when the daemon asks:
   * they are not sent with the build definition and never written to the image or the export.
   */
  secrets?: Secrets;
  /**
   * Registry credentials BuildKit asks for by host when it pulls (`FROM`) or pushes
   * (`type=image,push=true`): served from this process over the session, never sent otherwise.
   */
  registryAuth?: RegistryAuth;
  /**
   * Where a `type=local` cache goes and comes from, by name: a cache export `{type: 'local',
   * attrs: {dest: NAME}}` or import `{src: NAME, digest}` reads and writes `contentStores[NAME]`
   * over the session (buildctl's `--export-cache type=local,dest=DIR`, with the store in this
   * process instead of a directory). The export's manifest comes back as the solve's
   * `exporterResponse['cache.manifest']` (a descriptor's JSON): import it next time by its digest.
   */
  contentStores?: Record<string, ContentStore>;
  signal?: AbortSignal;
  /** Build reference; random when omitted. */
  ref?: string;
  /**
   * Extra gRPC metadata for the Solve call, e.g. a W3C `traceparent`, which a buildkitd with
   * tracing continues (its own spans join the caller's trace).
   */
  metadata?: Record<string, string>;
}

export interface SolveResult {
  ref: string;
  exporterResponse: Record<string, string>;
}

export interface WorkerInfo {
  id: string;
  labels: Record<string, string>;
  platforms: Array<{ os: string; architecture: string; variant?: string }>;
  buildkitVersion?: { package: string; version: string; revision: string };
}

export interface UsageRecord {
  id: string;
  mutable: boolean;
  inUse: boolean;
  size: number;
  description: string;
  recordType: string;
  shared: boolean;
  createdAt?: Date;
  lastUsedAt?: Date;
  usageCount: number;
}

export interface PruneOptions {
  all?: boolean;
  filter?: string[];
  keepDurationSeconds?: number;
  keepBytes?: number;
}

/** Connects to a BuildKit daemon (`unix://`, `tcp://`, `docker://`; default `$BUILDKIT_HOST`). */
export async function connect(address?: string, options: ConnectOptions = {}): Promise<BuildkitClient> {
  const addr = parseAddress(address);
  const timeoutMs = options.timeoutMs ?? 5000;
  await precheck(addr, timeoutMs);
  let proxy: UpgradeProxy | undefined;
  // How both the Control calls and a tunneled session reach the daemon.
  let dialer: Dialer;
  if (addr.kind === 'docker') {
    proxy = await startUpgradeProxy(addr.socketPath);
    const proxyPath = proxy.socketPath;
    dialer = { connect: () => net.connect(proxyPath), origin: 'http://localhost' };
  } else if (addr.kind === 'unix') {
    dialer = { connect: () => net.connect(addr.path), origin: 'http://localhost' };
  } else {
    const host = addr.host.replace(/^\[(.*)\]$/, '$1');
    dialer = {
      connect: () => net.connect(addr.port, host),
      origin: `http://${addr.host}:${addr.port}`,
    };
    if (options.tls) {
      const pem = (v: string | Buffer | undefined) =>
        v === undefined
          ? undefined
          : Buffer.isBuffer(v) || v.includes('-----BEGIN')
            ? Buffer.from(v)
            : readFileSync(v);
      const ca = pem(options.tls.ca);
      const key = pem(options.tls.key);
      const cert = pem(options.tls.cert);
      const { serverName } = options.tls;
      // The certificate is verified against serverName, else the host name (an IP address is
      // checked against the certificate's IP entries).
      const name = serverName ?? (net.isIP(host) ? undefined : host);
      dialer = {
        connect: () =>
          tls.connect({
            host,
            port: addr.port,
            ALPNProtocols: ['h2'],
            ...(name !== undefined ? { servername: name } : {}),
            ...(ca ? { ca } : {}),
            ...(key ? { key } : {}),
            ...(cert ? { cert } : {}),
          }),
        origin: `https://${serverName ?? addr.host}:${addr.port}`,
      };
    }
  }
  const maxReceiveMessageBytes = options.maxReceiveMessageBytes ?? DEFAULT_MAX_RECEIVE_MESSAGE_BYTES;
  const connection = new GrpcConnection(dialer, {
    maxReceiveMessageBytes,
    windowBytes: CONTROL_WINDOW_BYTES,
    ...(options.keepalive ? { keepalive: options.keepalive } : {}),
  });
  try {
    await connection.ready(Date.now() + timeoutMs);
  } catch (err) {
    connection.close();
    await proxy?.close();
    throw new BuildkitConnectionError(
      `cannot reach BuildKit at ${addr.raw} within ${timeoutMs} ms: ${(err as GrpcError).details ?? (err as Error).message}. ${hint(addr)}`,
      addr.raw,
      { cause: err },
    );
  }
  const control = new ControlClient(connection);
  const transport = options.sessionTransport ?? (addr.kind === 'docker' ? 'upgrade' : 'control');
  if (transport === 'upgrade' && addr.kind !== 'docker') {
    connection.close();
    await proxy?.close();
    throw new InvalidArgumentError('sessionTransport "upgrade" needs a docker:// address');
  }
  const route: SessionRoute =
    transport === 'upgrade' && addr.kind === 'docker'
      ? { kind: 'upgrade', dockerSocket: addr.socketPath }
      : {
          kind: 'control',
          dialer,
          maxReceiveMessageBytes,
        };
  return new BuildkitClient(addr, control, proxy, route);
}

/** How a solve's session reaches the daemon: Docker's `POST /session`, or through Control.Session. */
type SessionRoute =
  | { kind: 'upgrade'; dockerSocket: string }
  | { kind: 'control'; dialer: Dialer; maxReceiveMessageBytes: number };

function hint(addr: BuildkitAddress): string {
  switch (addr.kind) {
    case 'unix':
      return `Check that buildkitd is running and listening on ${addr.path}, and that this process may open it.`;
    case 'tcp':
      return 'Check the host and port, that buildkitd listens on TCP (--addr tcp://0.0.0.0:PORT), and the TLS settings: a daemon with --tlscacert needs ca, cert and key.';
    case 'docker':
      return `Check that the Docker daemon is running at ${addr.socketPath} and is 20.10 or newer.`;
  }
}

/** Fails fast, with the real reason, where a socket path is wrong or a Docker daemon refuses the upgrade. */
async function precheck(addr: BuildkitAddress, timeoutMs: number): Promise<void> {
  const path = addr.kind === 'unix' ? addr.path : addr.kind === 'docker' ? addr.socketPath : undefined;
  if (path === undefined) return;
  try {
    if (!statSync(path).isSocket()) throw new Error(`${path} is not a socket`);
    if (addr.kind === 'docker')
      (await dockerUpgrade({ socketPath: path, path: '/grpc', timeoutMs })).destroy();
  } catch (err) {
    const reason =
      (err as NodeJS.ErrnoException).code === 'ENOENT' ? `${path} does not exist` : (err as Error).message;
    throw new BuildkitConnectionError(
      `cannot reach BuildKit at ${addr.raw}: ${reason}. ${hint(addr)}`,
      addr.raw,
      {
        cause: err,
      },
    );
  }
}

export class BuildkitClient {
  /** @internal use connect() */
  constructor(
    readonly address: BuildkitAddress,
    private readonly control: ControlClient,
    private readonly proxy: UpgradeProxy | undefined,
    private readonly sessionRoute: SessionRoute,
  ) {}

  async listWorkers(): Promise<WorkerInfo[]> {
    const res = await this.call('ListWorkers', () => this.control.listWorkers([]));
    return res.record.map((r) => ({
      id: r.ID,
      labels: r.Labels,
      platforms: r.platforms.map((p) => ({
        os: p.OS,
        architecture: p.Architecture,
        ...(p.Variant ? { variant: p.Variant } : {}),
      })),
      ...(r.BuildkitVersion?.version ? { buildkitVersion: r.BuildkitVersion } : {}),
    }));
  }

  /** Daemon version (Control.Info, BuildKit >= 0.11); UnsupportedError on older daemons such as Docker 20.10's. */
  async info(): Promise<{ buildkitVersion: { package: string; version: string; revision: string } }> {
    return this.call('Info', () => this.control.info());
  }

  async diskUsage(filter: string[] = []): Promise<UsageRecord[]> {
    const res = await this.call('DiskUsage', () => this.control.diskUsage(filter));
    return res.record.map(toUsage);
  }

  async prune(opts: PruneOptions = {}): Promise<UsageRecord[]> {
    const records = await this.call('Prune', () =>
      this.control.prune({
        filter: opts.filter ?? [],
        all: opts.all ?? false,
        keepDuration: (opts.keepDurationSeconds ?? 0) * 1e9,
        keepBytes: opts.keepBytes ?? 0,
      }),
    );
    return records.map(toUsage);
  }

  /**
   * Runs one build: opens a session that serves the local dirs and receives the export, asks
   * the frontend to solve, and reports status events. Resolves once the export is complete.
   */
  async solve(opts: SolveOptions, onStatus?: (event: StatusEvent) => void): Promise<SolveResult> {
    const exports = opts.exports ?? [];
    if (exports.length > 1) {
      throw new InvalidArgumentError(
        'only one export per solve is supported (older daemons accept a single exporter)',
      );
    }
    const exp = exports[0];
    const session = new Session({
      localDirs: opts.localDirs ?? {},
      ...(opts.sharedKey !== undefined ? { sharedKey: opts.sharedKey } : {}),
      ...(opts.secrets !== undefined ? { secrets: opts.secrets } : {}),
      ...(opts.registryAuth !== undefined ? { registryAuth: opts.registryAuth } : {}),
      ...(opts.contentStores
        ? {
            contentStores: new Map(
              Object.entries(opts.contentStores).map(([name, store]) => [`local:${name}`, store]),
            ),
          }
        : {}),
      ...(exp ? sinkFor(exp) : {}),
    });
    const ref = opts.ref ?? randomBytes(16).toString('hex');
    const tracker = new StatusTracker();
    const signal = opts.signal;
    if (signal?.aborted) throw new CanceledError();

    let connection: Duplex | undefined;
    let sessionError: Error | undefined;
    let solveDone = false;
    let statusCall: ClientCall<StatusResponse> | undefined;
    let solveCall: { cancel: () => void } | undefined;
    let senderTimer: NodeJS.Timeout | undefined;
    let statusEnded: Promise<void> | undefined;
    const onAbort = () => {
      solveCall?.cancel();
      statusCall?.cancel();
    };
    signal?.addEventListener('abort', onAbort, { once: true });
    try {
      connection = await this.openSession(session);
      connection.once('error', (err: Error) => {
        sessionError = err;
      });
      session.serve(connection);

      const statusCallLocal = this.control.status(ref);
      statusCall = statusCallLocal;
      statusEnded = new Promise<void>((resolve) => {
        statusCallLocal.on('data', (res: StatusResponse) => {
          for (const ev of tracker.update(res)) onStatus?.(ev);
        });
        statusCallLocal.on('end', resolve);
        statusCallLocal.on('error', () => resolve());
      });

      const imports = (opts.cacheImports ?? []).map((c) => ({ Type: c.type, Attrs: c.attrs ?? {} }));
      const request: SolveRequest = {
        Ref: ref,
        Exporter: exp?.type ?? '',
        ExporterAttrs: exp?.attrs ?? {},
        Session: session.id,
        Frontend: opts.frontend,
        // A frontend (the Dockerfile one) imports cache only from its `cache-imports` attribute,
        // the JSON buildctl's client puts there; Cache.Imports alone serves plain LLB solves.
        FrontendAttrs: {
          ...(opts.frontendAttrs ?? {}),
          ...(opts.frontend && imports.length > 0 ? { 'cache-imports': JSON.stringify(imports) } : {}),
        },
        Cache: {
          Imports: imports,
          Exports: (opts.cacheExports ?? []).map((c) => ({ Type: c.type, Attrs: c.attrs ?? {} })),
        },
      };
      const response = await new Promise<SolveResponse>((resolve, reject) => {
        const call = this.control.solve(request, opts.metadata ?? {});
        solveCall = call;
        call.response.then(
          (res) => {
            solveDone = true;
            resolve(res);
          },
          (err) => {
            solveDone = true;
            reject(err);
          },
        );
        if (signal?.aborted) call.cancel();
        // BuildKit normally fails the build at once with the sender's error; if it does not (a
        // lost status, a daemon stuck on the stream), the build is ended here, never left hanging.
        // The session runs on a connection of its own: should it fail (refused, cut), BuildKit
        // would wait for a session that never comes, so the build ends here.
        const sessionConnection = connection as Duplex;
        sessionConnection.once('close', () => {
          if (solveDone) return;
          solveCall?.cancel();
          const why = sessionError ? `: ${sessionError.message}` : '';
          reject(
            new BuildkitConnectionError(
              `lost the session connection to BuildKit at ${this.address.raw}${why}`,
              this.address.raw,
              { cause: sessionError },
            ),
          );
        });
        void session.transferFailed.then((failure) => {
          senderTimer = setTimeout(() => {
            solveCall?.cancel();
            const message = `${failure.message}; BuildKit had not ended the build ${SENDER_FAILURE_GRACE_MS / 1000} s later, so the client did`;
            reject(new SolveError(message, undefined, failure.message, { cause: failure.cause }));
          }, SENDER_FAILURE_GRACE_MS);
        });
      });
      await session.exportsSettled();
      // The status stream ends with the build; give trailing logs a moment, never hang on it.
      await settleStatus(statusEnded, 2000);
      return { ref, exporterResponse: response.ExporterResponse };
    } catch (err) {
      if (signal?.aborted) throw new CanceledError('build canceled', { cause: err });
      if (err instanceof BuildkitError) throw err;
      const lost = daemonFault(err, this.address.raw);
      if (lost) throw lost;
      const se = err as GrpcError;
      // The failed step's name comes on the status stream, which may trail Solve's answer.
      await settleStatus(statusEnded, 1000);
      const failed = tracker.failedVertex();
      const message = se.details ?? (err as Error).message;
      throw new SolveError(failed ? `${failed.name}: ${message}` : message, failed?.name, message, {
        cause: err,
      });
    } finally {
      signal?.removeEventListener('abort', onAbort);
      clearTimeout(senderTimer);
      statusCall?.cancel();
      session.close();
    }
  }

  private async openSession(session: Session): Promise<Duplex> {
    const route = this.sessionRoute;
    if (route.kind === 'upgrade') {
      return dockerUpgrade({ socketPath: route.dockerSocket, path: '/session', headers: session.headers() });
    }
    return new ControlSessionStream(route.dialer, session.headers(), route.maxReceiveMessageBytes);
  }

  private async call<T>(method: string, run: () => Promise<T>): Promise<T> {
    try {
      return await run();
    } catch (err) {
      throw this.wrapCallError(err, method);
    }
  }

  private wrapCallError(err: unknown, method: string): Error {
    const se = err as GrpcError;
    if (se.code === status.UNIMPLEMENTED) {
      return new UnsupportedError(`the daemon at ${this.address.raw} does not implement Control.${method}`, {
        cause: err,
      });
    }
    if (se.code === status.UNAVAILABLE) {
      return new BuildkitConnectionError(
        `BuildKit at ${this.address.raw} is unavailable: ${se.details}`,
        this.address.raw,
        {
          cause: err,
        },
      );
    }
    return err as Error;
  }

  async close(): Promise<void> {
    this.control.close();
    await this.proxy?.close();
  }
}

function toUsage(r: WireUsageRecord): UsageRecord {
  const date = (t: Timestamp | null) => (t ? new Date(t.seconds * 1000 + t.nanos / 1e6) : undefined);
  const createdAt = date(r.CreatedAt);
  const lastUsedAt = date(r.LastUsedAt);
  return {
    id: r.ID,
    mutable: r.Mutable,
    inUse: r.InUse,
    size: Number(r.Size),
    description: r.Description,
    recordType: r.RecordType,
    shared: r.Shared,
    usageCount: Number(r.UsageCount),
    ...(createdAt ? { createdAt } : {}),
    ...(lastUsedAt ? { lastUsedAt } : {}),
  };
}

/** Waits for the status stream to end (it ends with the build), never longer than `ms`. */
async function settleStatus(ended: Promise<void> | undefined, ms: number): Promise<void> {
  let timer: NodeJS.Timeout | undefined;
  await Promise.race([ended, new Promise((r) => (timer = setTimeout(r, ms)))]);
  clearTimeout(timer);
}

function sinkFor(exp: ExportEntry): { exportSink?: ExportSink } {
  if (exp.type === 'local') {
    if (!('dir' in exp) || typeof exp.dir !== 'string')
      throw new InvalidArgumentError('a local export needs `dir`');
    return { exportSink: { kind: 'dir', dir: exp.dir } };
  }
  if ('output' in exp) {
    const output = exp.output;
    return { exportSink: { kind: 'bytes', open: typeof output === 'function' ? output : () => output } };
  }
  if (['tar', 'oci', 'docker'].includes(exp.type)) {
    throw new InvalidArgumentError(
      `a ${exp.type} export needs \`output\` (a Writable or a function returning one)`,
    );
  }
  return {};
}

/**
 * The daemon, not the build, when Solve fails this way: the connection went (UNAVAILABLE), or
 * the call broke without a status the daemon sent (an answer that is no gRPC, cut inside a
 * message, a stream reset, as a proxy between may cause). A status the daemon sent is the
 * build's failure, as BuildKit words it, and so is an answer over the message limit.
 */
export function daemonFault(err: unknown, address: string): BuildkitConnectionError | undefined {
  if (!(err instanceof GrpcError)) return undefined;
  if (err.code === status.UNAVAILABLE)
    return new BuildkitConnectionError(`lost the BuildKit daemon at ${address}: ${err.details}`, address, {
      cause: err,
    });
  // An answer too large to take may be of the build's making (its metadata): not the daemon's.
  if (!err.sentByPeer && err.code !== status.RESOURCE_EXHAUSTED)
    return new BuildkitConnectionError(
      `the BuildKit daemon at ${address} broke the call: ${err.details}`,
      address,
      {
        cause: err,
      },
    );
  return undefined;
}
