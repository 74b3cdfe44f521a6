// A stand-in for a standalone buildkitd: listens on a unix socket, a loopback TCP port, or
// TLS with client certificates, and relays each connection to a Docker daemon's embedded
// BuildKit (POST /grpc upgraded to h2c). No buildkitd binary can be installed here, so this
// is how the unix://, tcp:// and mTLS paths of the client meet a real BuildKit.
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import tls from 'node:tls';
import { spliceToDockerGrpc } from '../src/transport/upgrade-proxy.js';

export interface Relay {
  address: string;
  /** Connections accepted so far (TCP connections, before any TLS handshake). */
  readonly connections: number;
  close(): Promise<void>;
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

export async function startRelay(dockerSocket: string, listen: RelayListen): Promise<Relay> {
  const live = new Set<net.Socket>();
  const onConnection = (client: net.Socket) => spliceToDockerGrpc(client, dockerSocket, live);
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
    close: () =>
      new Promise((resolve) => {
        for (const s of live) s.destroy();
        server.close(() => resolve());
      }),
  };
}

export interface TestPki {
  dir: string;
  ca: string;
  serverCert: string;
  serverKey: string;
  clientCert: string;
  clientKey: string;
  /** A second CA that signed nothing the server trusts. */
  otherCa: string;
  otherClientCert: string;
  otherClientKey: string;
  cleanup(): void;
}

/** A throwaway CA with a server certificate for 127.0.0.1/localhost and client certificates, made by openssl. */
export function makeTestPki(): TestPki {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'bkc-pki-'));
  const ssl = (...args: string[]) => execFileSync('openssl', args, { cwd: dir, stdio: 'pipe' });
  const ca = (name: string) => {
    ssl(
      'req',
      '-x509',
      '-newkey',
      'rsa:2048',
      '-nodes',
      '-days',
      '2',
      '-subj',
      `/CN=${name}`,
      '-keyout',
      `${name}.key`,
      '-out',
      `${name}.crt`,
    );
  };
  const leaf = (name: string, signer: string, ext: string) => {
    fs.writeFileSync(path.join(dir, `${name}.ext`), ext);
    ssl(
      'req',
      '-newkey',
      'rsa:2048',
      '-nodes',
      '-subj',
      `/CN=${name}`,
      '-keyout',
      `${name}.key`,
      '-out',
      `${name}.csr`,
    );
    ssl(
      'x509',
      '-req',
      '-in',
      `${name}.csr`,
      '-CA',
      `${signer}.crt`,
      '-CAkey',
      `${signer}.key`,
      '-CAcreateserial',
      '-days',
      '2',
      '-extfile',
      `${name}.ext`,
      '-out',
      `${name}.crt`,
    );
  };
  ca('ca');
  ca('otherca');
  leaf(
    'server',
    'ca',
    'subjectAltName=DNS:buildkitd.test,DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n',
  );
  leaf('client', 'ca', 'extendedKeyUsage=clientAuth\n');
  leaf('otherclient', 'otherca', 'extendedKeyUsage=clientAuth\n');
  const p = (f: string) => path.join(dir, f);
  return {
    dir,
    ca: p('ca.crt'),
    serverCert: p('server.crt'),
    serverKey: p('server.key'),
    clientCert: p('client.crt'),
    clientKey: p('client.key'),
    otherCa: p('otherca.crt'),
    otherClientCert: p('otherclient.crt'),
    otherClientKey: p('otherclient.key'),
    cleanup: () => fs.rmSync(dir, { recursive: true, force: true }),
  };
}
