// A byte-for-byte unix socket forwarder. It lets a client running as another uid reach a
// daemon socket only root may open, and lets a test cut every live connection at once (the
// transport dying under a build).
import { chmod } from 'node:fs/promises';
import net from 'node:net';

export interface Forwarder {
  socketPath: string;
  /** Destroys every connection passing through now; new ones are still accepted. */
  cutAll(): void;
  /** Stops accepting connections; those passing through now go on. */
  refuseNew(): void;
  close(): Promise<void>;
}

export async function startForwarder(targetSocket: string, socketPath: string): Promise<Forwarder> {
  const live = new Set<net.Socket>();
  const track = (s: net.Socket) => {
    live.add(s);
    s.on('close', () => live.delete(s));
  };
  const server = net.createServer((client) => {
    const upstream = net.connect(targetSocket);
    track(client);
    track(upstream);
    client.pipe(upstream);
    upstream.pipe(client);
    client.on('error', () => upstream.destroy());
    upstream.on('error', () => client.destroy());
    client.on('close', () => upstream.destroy());
    upstream.on('close', () => client.destroy());
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(socketPath, resolve);
  });
  await chmod(socketPath, 0o666);
  const cutAll = () => {
    for (const s of live) s.destroy();
  };
  return {
    socketPath,
    cutAll,
    refuseNew: () => server.close(),
    close: () =>
      new Promise((resolve) => {
        cutAll();
        if (server.listening) server.close(() => resolve());
        else resolve();
      }),
  };
}
