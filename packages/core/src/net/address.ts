/**
 * IP addresses Kiln must not be pointed at by a tenant (SSRF): loopback, private, link-local
 * (with the cloud metadata service), CGNAT, multicast, broadcast, reserved and documentation
 * ranges, in IPv4 and IPv6, including IPv6 forms that carry an IPv4 address. Pure: no DNS.
 *
 * Inputs are addresses as `new URL().hostname` (brackets allowed) or dns.lookup give them.
 * WHATWG URL parsing already turns `2130706433`, `0x7f.1` or `0177.0.0.1` into `127.0.0.1`, so
 * an http(s) URL's hostname is either dotted-decimal, bracketed IPv6, or a name (a git:// host is
 * left as written: git-hosts.ts parses it as an http one first).
 */
import { isIPv4, isIPv6 } from 'node:net';

export interface Ip {
  family: 4 | 6;
  bytes: Uint8Array;
}

export interface Network extends Ip {
  prefix: number;
  /** As written in the setting, for messages. */
  text: string;
}

/** Special-purpose ranges (IANA registries), most specific first: the first match names the refusal. */
const IPV4_RANGES: ReadonlyArray<[string, string]> = [
  ['0.0.0.0/8', 'an unspecified ("this network") address'],
  ['10.0.0.0/8', 'a private address'],
  ['100.64.0.0/10', 'a shared (CGNAT) address'],
  ['127.0.0.0/8', 'a loopback address'],
  ['169.254.169.254/32', 'the cloud metadata service (link-local)'],
  ['169.254.0.0/16', 'a link-local address'],
  ['172.16.0.0/12', 'a private address'],
  ['192.0.0.0/24', 'an IETF protocol assignment'],
  ['192.0.2.0/24', 'a documentation address'],
  ['192.168.0.0/16', 'a private address'],
  ['198.18.0.0/15', 'a benchmarking address'],
  ['198.51.100.0/24', 'a documentation address'],
  ['203.0.113.0/24', 'a documentation address'],
  ['224.0.0.0/4', 'a multicast address'],
  ['255.255.255.255/32', 'the broadcast address'],
  ['240.0.0.0/4', 'a reserved address'],
];

const IPV6_RANGES: ReadonlyArray<[string, string]> = [
  ['::/128', 'the unspecified address'],
  ['::1/128', 'a loopback address'],
  ['100::/64', 'a discard-only address'],
  ['2001::/32', 'a Teredo tunnel address'],
  ['2001:db8::/32', 'a documentation address'],
  ['fc00::/7', 'a unique local (private) address'],
  ['fe80::/10', 'a link-local address'],
  ['fec0::/10', 'a site-local address'],
  ['ff00::/8', 'a multicast address'],
];

/** IPv6 ranges whose last (or, for 6to4, second and third) 32 bits are an IPv4 address that is reached. */
const EMBEDDING: ReadonlyArray<[string, number, string]> = [
  ['::ffff:0:0/96', 12, 'IPv4-mapped'],
  ['::/96', 12, 'IPv4-compatible'],
  ['64:ff9b::/96', 12, 'NAT64'],
  ['2002::/16', 2, '6to4'],
];

/** An address literal (dotted-decimal IPv4, IPv6 with optional brackets and zone), else undefined. */
export function parseIp(text: string): Ip | undefined {
  const bare = text.replace(/^\[(.*)\]$/, '$1').replace(/%.*$/, '');
  if (isIPv4(bare)) return { family: 4, bytes: Uint8Array.from(bare.split('.'), Number) };
  if (isIPv6(bare)) return { family: 6, bytes: parseIpv6(bare) };
  return undefined;
}

function parseIpv6(text: string): Uint8Array {
  let s = text;
  const last = s.lastIndexOf(':');
  const tail = s.slice(last + 1);
  if (tail.includes('.')) {
    const [a = 0, b = 0, c = 0, d = 0] = tail.split('.').map(Number);
    s = `${s.slice(0, last + 1)}${((a << 8) | b).toString(16)}:${((c << 8) | d).toString(16)}`;
  }
  const [head = '', rest] = s.split('::');
  const groups = (part: string) => (part === '' ? [] : part.split(':').map((g) => Number.parseInt(g, 16)));
  const front = groups(head);
  const back = rest === undefined ? [] : groups(rest);
  const all = [...front, ...new Array<number>(8 - front.length - back.length).fill(0), ...back];
  const bytes = new Uint8Array(16);
  all.forEach((g, i) => {
    bytes[i * 2] = g >> 8;
    bytes[i * 2 + 1] = g & 0xff;
  });
  return bytes;
}

/** `10.0.0.0/8`, `fd00::/8`, or a single address (a /32 or /128); throws an Error saying what is wrong. */
export function parseNetwork(text: string): Network {
  const [addr = '', prefixText, extra] = text.split('/');
  const ip = parseIp(addr);
  if (!ip || extra !== undefined) throw new Error(`"${text}" is not an IP address or CIDR network`);
  const max = ip.family === 4 ? 32 : 128;
  const prefix = prefixText === undefined ? max : Number(prefixText);
  if (!/^\d{1,3}$/.test(prefixText ?? String(max)) || prefix > max) {
    throw new Error(`"${text}": the prefix length must be 0 to ${max}`);
  }
  return { ...ip, prefix, text };
}

/** Comma-separated networks; empty entries are ignored. */
export function parseNetworks(list: string): Network[] {
  return list
    .split(',')
    .map((s) => s.trim())
    .filter(Boolean)
    .map(parseNetwork);
}

function inNetwork(ip: Ip, network: Network): boolean {
  if (ip.family !== network.family) return false;
  const whole = Math.floor(network.prefix / 8);
  for (let i = 0; i < whole; i++) if (ip.bytes[i] !== network.bytes[i]) return false;
  const bits = network.prefix % 8;
  if (bits === 0) return true;
  const mask = (0xff << (8 - bits)) & 0xff;
  return ((ip.bytes[whole] ?? 0) & mask) === ((network.bytes[whole] ?? 0) & mask);
}

const table = (ranges: ReadonlyArray<[string, string]>) =>
  ranges.map(([cidr, why]) => ({ network: parseNetwork(cidr), why }));
const V4 = table(IPV4_RANGES);
const V6 = table(IPV6_RANGES);
const EMBEDDED = EMBEDDING.map(([cidr, offset, form]) => ({ network: parseNetwork(cidr), offset, form }));

/** The IPv4 address an IPv6 address stands for (mapped, compatible, NAT64, 6to4), if any. */
function embeddedIpv4(ip: Ip): { ip: Ip; form: string } | undefined {
  if (ip.family !== 6) return undefined;
  const e = EMBEDDED.find((x) => inNetwork(ip, x.network));
  return e && { ip: { family: 4, bytes: ip.bytes.slice(e.offset, e.offset + 4) }, form: e.form };
}

/**
 * Why an address is special-purpose (`"a loopback address"`), or undefined for a public unicast
 * address. An IPv6 address carrying an IPv4 one is judged by the IPv4 address.
 */
export function specialRange(ip: Ip): string | undefined {
  if (ip.family === 4) return V4.find((r) => inNetwork(ip, r.network))?.why;
  const own = V6.find((r) => inNetwork(ip, r.network))?.why;
  if (own) return own;
  const inner = embeddedIpv4(ip);
  const why = inner && specialRange(inner.ip);
  return why && `${why} (${inner.form})`;
}

/** Whether an address is in one of the networks (an IPv6 form of an IPv4 address matches IPv4 networks). */
export function inNetworks(ip: Ip, networks: readonly Network[]): boolean {
  const inner = embeddedIpv4(ip)?.ip;
  return networks.some((n) => inNetwork(ip, n) || (inner !== undefined && inNetwork(inner, n)));
}

/**
 * Why Kiln refuses to connect to this address, or undefined when it may: special-purpose ranges
 * are refused unless the operator allowed a network containing the address.
 */
export function refusedAddress(ip: Ip, allowed: readonly Network[]): string | undefined {
  const why = specialRange(ip);
  return why && !inNetworks(ip, allowed) ? why : undefined;
}
