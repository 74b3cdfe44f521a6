import { randomBytes } from 'node:crypto';
import { rmSync } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { dockerUpgrade } from './docker-upgrade.js';

export interface UpgradeProxy {
  /** The private unix socket to dial. */
  socketPath: string;
  close(): Promise<void>;
}

/**
 * node:http2 takes its connection synchronously from `createConnection`, while a Docker
 * daemon's gRPC needs an HTTP/1.1 upgrade first; so each connection lands on a private unix
 * socket here and is spliced onto a freshly upgraded `POST /grpc` connection to the daemon.
 */
/**
 * Connects `client` to a freshly upgraded `POST /grpc` connection of the Docker daemon and
 * pipes the two together; either side closing closes both. `live` tracks open sockets so
 * the owner can destroy them on close.
 */
export function spliceToDockerGrpc(client: net.Socket, dockerSocket: string, live: Set<net.Socket>): void {
  live.add(client);
  client.on('close', () => live.delete(client));
  client.on('error', () => client.destroy());
  client.pause();
  dockerUpgrade({ socketPath: dockerSocket, path: '/grpc' }).then(
    (upstream) => {
      if (client.destroyed) {
        upstream.destroy();
        return;
      }
      live.add(upstream);
      upstream.on('close', () => {
        live.delete(upstream);
        client.destroy();
      });
      upstream.on('error', () => upstream.destroy());
      client.on('close', () => upstream.destroy());
      upstream.pipe(client);
      client.pipe(upstream);
      client.resume();
    },
    () => client.destroy(),
  );
}

export async function startUpgradeProxy(dockerSocket: string): Promise<UpgradeProxy> {
  const sockPath = path.join(os.tmpdir(), `bkc-${process.pid}-${randomBytes(6).toString('hex')}.sock`);
  const live = new Set<net.Socket>();
  const server = net.createServer((client) => spliceToDockerGrpc(client, dockerSocket, live));
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(sockPath, () => resolve());
  });
  // Keep the process free to exit when the caller forgets close(); connections hold it open anyway.
  server.unref();
  return {
    socketPath: sockPath,
    close: () =>
      new Promise<void>((resolve) => {
        for (const s of live) s.destroy();
        server.close(() => {
          rmSync(sockPath, { force: true });
          resolve();
        });
      }),
  };
}
