// Listeners in front of a real BuildKit: on a unix socket, a loopback TCP port, or TLS with
// client certificates. startRelay reaches a Docker daemon's embedded BuildKit (which has no
// listener of its own), startPipe a standalone buildkitd's socket; so the client's unix://, tcp://
// and mTLS paths, and addresses a test chooses, all meet a real daemon.
import net from 'node:net';
import tls from 'node:tls';
import { spliceToDockerGrpc } from '../src/transport/upgrade-proxy.js';

export interface Relay {
  address: string;
  /** Connections accepted so far (TCP connections, before any TLS handshake). */
  readonly connections: number;
  close(): Promise<void>;
  /**
   * Resets every connection open now (TCP RST where the socket is TCP), as the host of a daemon
   * that died would; the relay goes on accepting new ones.
   */
  reset(): void;
}

/** TCP on `host:port` (default 127.0.0.1 and a free port). */
interface TcpListen {
  tcp: true;
  host?: string;
  port?: number;
}

export type RelayListen =
  | { unixPath: string }
  | TcpListen
  | (TcpListen & { tls: { key: Buffer; cert: Buffer; ca: Buffer } });

/** Relays each connection to a Docker daemon's embedded BuildKit (POST /grpc upgraded to h2c). */
export function startRelay(dockerSocket: string, listen: RelayListen): Promise<Relay> {
  return listenRelay(listen, (client, live) => spliceToDockerGrpc(client, dockerSocket, live));
}

/** Pipes each connection to a unix socket as it is, e.g. a standalone buildkitd's (h2c on both). */
export function startPipe(unixSocket: string, listen: RelayListen): Promise<Relay> {
  return listenRelay(listen, (client, live) => {
    const upstream = net.connect(unixSocket);
    for (const s of [client, upstream]) {
      live.add(s);
      s.on('error', () => {
        client.destroy();
        upstream.destroy();
      });
      s.on('close', () => live.delete(s));
    }
    client.pipe(upstream).pipe(client);
  });
}

async function listenRelay(
  listen: RelayListen,
  relay: (client: net.Socket, live: Set<net.Socket>) => void,
): Promise<Relay> {
  const live = new Set<net.Socket>();
  const onConnection = (client: net.Socket) => relay(client, live);
  const server =
    'tls' in listen
      ? tls.createServer(
          { ...listen.tls, requestCert: true, rejectUnauthorized: true, ALPNProtocols: ['h2'] },
          onConnection,
        )
      : net.createServer(onConnection);
  // TLS handshake failures (a client without a certificate) must not crash the relay.
  server.on('tlsClientError', () => undefined);
  let connections = 0;
  server.on('connection', () => connections++);
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    if ('unixPath' in listen) server.listen(listen.unixPath, resolve);
    else server.listen(listen.port ?? 0, listen.host ?? '127.0.0.1', resolve);
  });
  const addr = server.address();
  const address =
    'unixPath' in listen
      ? `unix://${listen.unixPath}`
      : `tcp://${listen.host ?? '127.0.0.1'}:${(addr as net.AddressInfo).port}`;
  return {
    address,
    get connections() {
      return connections;
    },
    reset: () => {
      for (const s of live) {
        try {
          s.resetAndDestroy();
        } catch {
          s.destroy(); // a unix socket has no RST
        }
      }
    },
    close: () =>
      new Promise((resolve) => {
        for (const s of live) s.destroy();
        server.close(() => resolve());
      }),
  };
}
