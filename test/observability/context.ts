// The context both observability tests build: busybox copied in (a step the second build finds
// in BuildKit's cache) and a RUN that writes the build arg N (a step each N runs anew).
import { execFileSync } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import fs from 'node:fs/promises';
import { busyboxPath, makeContext } from '../../packages/buildkit-client/test-support/context.js';

export const runNonce = randomUUID();

const DOCKERFILE = [
  'FROM scratch',
  'COPY busybox /bin/busybox',
  'ARG N=0',
  'RUN ["/bin/busybox", "sh", "-c", "/bin/busybox mkdir -p /out && echo $N > /out/n"]',
  '',
].join('\n');

/**
 * The context as a gzipped tar, for POST /v1/builds with `network=none&build-arg=N=…`. The daemon
 * is shared by the whole run: give N values no other test or run used (runNonce) for RUNs that
 * must not come from the cache.
 */
export async function contextTar(): Promise<Buffer> {
  const ctx = await makeContext({
    Dockerfile: DOCKERFILE,
    busybox: { content: await fs.readFile(busyboxPath()), mode: 0o755 },
  });
  try {
    return execFileSync('tar', ['-C', ctx.dir, '-czf', '-', '.']);
  } finally {
    await ctx.cleanup();
  }
}
