// A TCP relay in front of a real server (PostgreSQL, Redis) that, while frozen, passes nothing on
// either way and keeps every connection open: a server that stops answering (its host gone, a
// partition, the process stalled) as its clients see it. Thawed, it delivers what it held, as a
// network that heals or a server that resumes does.
import net from 'node:net';

export interface FreezingRelay {
  /** `url` with its host and port replaced by the relay's. */
  url: string;
  freeze(): void;
  thaw(): void;
  close(): Promise<void>;
}

export async function startFreezingRelay(target: string): Promise<FreezingRelay> {
  const to = new URL(target);
  let frozen = false;
  const held: Array<() => void> = [];
  const sockets = new Set<net.Socket>();
  const relay = net.createServer((client) => {
    const upstream = net.connect(Number(to.port), to.hostname);
    for (const [from, into] of [
      [client, upstream],
      [upstream, client],
    ] as const) {
      sockets.add(from);
      from.on('error', () => {});
      // A side that goes takes the other with it, as a connection ended end to end would.
      from.on('close', () => {
        sockets.delete(from);
        into.destroy();
      });
      from.on('data', (d) => {
        if (frozen) held.push(() => into.write(d));
        else into.write(d);
      });
    }
  });
  await new Promise<void>((resolve) => relay.listen(0, '127.0.0.1', resolve));
  const url = new URL(target);
  url.host = `127.0.0.1:${(relay.address() as net.AddressInfo).port}`;
  return {
    url: url.toString(),
    freeze: () => {
      frozen = true;
    },
    thaw: () => {
      frozen = false;
      for (const deliver of held.splice(0)) deliver();
    },
    close: async () => {
      for (const s of sockets) s.destroy();
      await new Promise((resolve) => relay.close(resolve));
    },
  };
}
