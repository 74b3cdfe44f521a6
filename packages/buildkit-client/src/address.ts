import { InvalidArgumentError } from './errors.js';

export type BuildkitAddress =
  | { kind: 'unix'; path: string; raw: string }
  | { kind: 'tcp'; host: string; port: number; raw: string }
  | { kind: 'docker'; socketPath: string; raw: string };

export const DEFAULT_DOCKER_SOCKET = '/var/run/docker.sock';
export const DEFAULT_BUILDKIT_SOCKET = '/run/buildkit/buildkitd.sock';

/**
 * Parses a BuildKit address the way buildctl's `--addr` reads it, plus `docker://` for a
 * Docker daemon socket (its embedded BuildKit). Defaults like buildctl: $BUILDKIT_HOST,
 * else the standard buildkitd socket.
 */
export function parseAddress(address: string | undefined = process.env.BUILDKIT_HOST): BuildkitAddress {
  const raw = address && address.length > 0 ? address : `unix://${DEFAULT_BUILDKIT_SOCKET}`;
  const match = /^([a-z0-9+.-]+):\/\/(.*)$/i.exec(raw);
  if (!match) {
    throw new InvalidArgumentError(
      `invalid BuildKit address "${raw}": expected unix:///path, tcp://host:port or docker:///path/to/docker.sock`,
    );
  }
  const scheme = (match[1] as string).toLowerCase();
  const rest = match[2] as string;
  switch (scheme) {
    case 'unix':
      if (!rest.startsWith('/'))
        throw new InvalidArgumentError(`invalid unix address "${raw}": the path must be absolute`);
      return { kind: 'unix', path: rest, raw };
    case 'docker':
      return { kind: 'docker', socketPath: rest.length > 0 ? rest : DEFAULT_DOCKER_SOCKET, raw };
    case 'tcp': {
      const hp = /^(\[[^\]]+\]|[^:/]+):(\d+)\/?$/.exec(rest);
      const port = hp ? Number(hp[2]) : Number.NaN;
      if (!hp || !(port > 0 && port < 65536)) {
        throw new InvalidArgumentError(`invalid tcp address "${raw}": expected tcp://host:port`);
      }
      return { kind: 'tcp', host: hp[1] as string, port, raw };
    }
    default:
      throw new InvalidArgumentError(
        `unsupported BuildKit address scheme "${scheme}://" in "${raw}": use unix://, tcp:// or docker://`,
      );
  }
}
