import { inNetworks, type Network, parseIp, refusedAddress } from './address.js';

const LOOPBACK = parseIp('127.0.0.1');

/** A URL hostname as compared: lowercase, without brackets or a trailing dot. */
export function normalizeHostname(hostname: string): string {
  return hostname
    .toLowerCase()
    .replace(/^\[(.*)\]$/, '$1')
    .replace(/\.$/, '');
}

/**
 * Why a URL's host is refused before any DNS look-up, or undefined: an address literal in a
 * special-purpose range (see address.ts), or `localhost` and `*.localhost`, which resolvers answer
 * with loopback without asking DNS (RFC 6761). Both pass when the operator allowed their network.
 * Other names can only be judged once resolved.
 */
export function refusedHost(hostname: string, allowed: readonly Network[]): string | undefined {
  const host = normalizeHostname(hostname);
  const ip = parseIp(host);
  if (ip) return refusedAddress(ip, allowed);
  const local = host === 'localhost' || host.endsWith('.localhost');
  return local && LOOPBACK && !inNetworks(LOOPBACK, allowed) ? 'a loopback name' : undefined;
}
