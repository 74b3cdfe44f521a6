// A server answer that never ends: MiB after MiB of one byte, as fast as the client reads.
import type { ServerResponse } from 'node:http';

export function sendForever(res: ServerResponse, byte: number): void {
  const chunk = Buffer.alloc(1024 * 1024, byte);
  const more = () => {
    while (!res.destroyed && res.write(chunk));
    if (!res.destroyed) res.once('drain', more);
  };
  more();
}
