// A `type: 'tar'` export that keeps what BuildKit sends in memory, for tests that inspect the tar.
import { Writable } from 'node:stream';

export function tarExport(): { type: 'tar'; output: Writable; bytes: () => Buffer } {
  const chunks: Buffer[] = [];
  const output = new Writable({
    write(c: Buffer, _e, cb) {
      chunks.push(c);
      cb();
    },
  });
  return { type: 'tar', output, bytes: () => Buffer.concat(chunks) };
}
