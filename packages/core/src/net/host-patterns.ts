import { normalizeHostname } from './host.js';

/**
 * Operator lists of hosts (`git.example.com`, `*.example.com`, `10.1.2.3`): an entry names one
 * host, or with `*.` every host below a domain (not the domain itself, as in docker and Go).
 * Entries are normalized as URL hosts are, so `[::1]`, `0:0::1` and `::1` are one entry.
 */
export function parseHostPatterns(list: string): string[] {
  return list
    .split(',')
    .map((s) => s.trim())
    .filter(Boolean)
    .map((entry) => {
      const wildcard = entry.startsWith('*.');
      const name = wildcard ? entry.slice(2) : entry;
      const host = hostOf(name.includes(':') && !name.startsWith('[') ? `[${name}]` : name);
      if (!host || (wildcard && host.includes(':')))
        throw new Error(`"${entry}" is not a host name or address`);
      return wildcard ? `*.${host}` : host;
    });
}

function hostOf(name: string): string | undefined {
  try {
    const url = new URL(`http://${name}/`);
    return url.port || url.username || url.pathname !== '/' ? undefined : normalizeHostname(url.hostname);
  } catch {
    return undefined;
  }
}

/** Whether a URL's hostname matches one of the patterns. */
export function hostMatches(hostname: string, patterns: readonly string[]): boolean {
  const host = normalizeHostname(hostname);
  return patterns.some((p) => (p.startsWith('*.') ? host.endsWith(p.slice(1)) : host === p));
}
