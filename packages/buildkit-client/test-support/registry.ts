// A private OCI registry with basic auth on loopback (scripts/lib/registry.sh, Debian's
// docker-registry), for tests that push images.
import { execFile } from 'node:child_process';
import fs from 'node:fs/promises';
import net from 'node:net';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';

const run = promisify(execFile);
const SCRIPT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../../scripts/lib/registry.sh');

export interface TestRegistry {
  /** `127.0.0.1:PORT`, as image names spell the host. */
  host: string;
  /** The digest the registry holds for `repo:tag` (HEAD with the user's login), or null. */
  manifestDigest(repo: string, tag?: string): Promise<string | null>;
  stop(): Promise<void>;
}

const freePort = () =>
  new Promise<number>((resolve) => {
    const s = net.createServer().listen(0, '127.0.0.1', () => {
      const { port } = s.address() as net.AddressInfo;
      s.close(() => resolve(port));
    });
  });

export async function startRegistry(user: string, password: string): Promise<TestRegistry> {
  const dir = await fs.mkdtemp('/tmp/kreg-');
  const { stdout } = await run('bash', [SCRIPT, 'start', dir, String(await freePort()), user, password]);
  const host = stdout.trim();
  return {
    host,
    async manifestDigest(repo, tag = 'v1') {
      const res = await fetch(`http://${host}/v2/${repo}/manifests/${tag}`, {
        method: 'HEAD',
        headers: {
          authorization: `Basic ${Buffer.from(`${user}:${password}`).toString('base64')}`,
          accept: [
            'application/vnd.oci.image.index.v1+json',
            'application/vnd.oci.image.manifest.v1+json',
            'application/vnd.docker.distribution.manifest.v2+json',
          ].join(', '),
        },
      });
      return res.status === 200 ? res.headers.get('docker-content-digest') : null;
    },
    async stop() {
      await run('bash', [SCRIPT, 'stop', dir]);
      await fs.rm(dir, { recursive: true, force: true });
    },
  };
}
