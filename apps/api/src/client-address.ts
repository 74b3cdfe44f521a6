/**
 * The key a per-address limit counts a client under. An IPv6 client commonly holds a whole /64
 * (one host gets one from its provider, and picks addresses in it freely), so counting each
 * address apart would let one host multiply its allowance by billions: IPv6 addresses count
 * by their /64. IPv4 ones (also as IPv4-mapped IPv6) count alone.
 */
import { isIPv4, isIPv6 } from 'node:net';

export function clientAddressKey(ip: string): string {
  const mapped = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(ip);
  if (mapped?.[1] && isIPv4(mapped[1])) return mapped[1];
  const address = ip.replace(/%.*$/, ''); // a zone (fe80::1%eth0) names the interface, not the host
  if (!isIPv6(address)) return ip;
  return `${firstFourGroups(address).join(':')}::/64`;
}

/** The first 64 bits of a valid IPv6 address, as four groups without leading zeros. */
function firstFourGroups(address: string): string[] {
  const [head = '', tail] = address.split('::');
  const groups = head === '' ? [] : head.split(':');
  if (tail !== undefined) {
    // `::` stands for as many zero groups as make eight; an embedded IPv4 tail takes two.
    const rest = tail === '' ? [] : tail.split(':');
    const width = rest.reduce((n, g) => n + (g.includes('.') ? 2 : 1), 0);
    groups.push(...Array<string>(8 - groups.length - width).fill('0'), ...rest);
  }
  return groups.slice(0, 4).map((g) => (g.includes('.') ? g : Number.parseInt(g, 16).toString(16)));
}
