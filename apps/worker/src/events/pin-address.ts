/**
 * Where a delivery may connect: the receiver's name resolved once, every address it resolves to
 * checked against the special-purpose ranges (SSRF), and one of them handed to the connection as
 * its only answer, so the request cannot go to an address a second look-up (DNS rebinding)
 * returns.
 */
import { lookup } from 'node:dns/promises';
import { type Network, normalizeHostname, parseIp, refusedAddress } from '@kiln/core';

export interface ResolvedAddress {
  address: string;
  family: number;
}

/** Every address of a name; dns.lookup (the system resolver, /etc/hosts included) by default. */
export type Resolve = (hostname: string) => Promise<ResolvedAddress[]>;

export const systemResolve: Resolve = (hostname) => lookup(hostname, { all: true, verbatim: true });

/** The receiver's address is one Kiln does not send to: the delivery fails, nothing was sent. */
export class RefusedAddressError extends Error {
  override name = 'RefusedAddressError';
}

/**
 * The first address of `hostname`, when none of its addresses is refused. One refused address
 * refuses the name: which of them a client would use is not Kiln's to predict, and a receiver
 * with a private address among public ones is misconfigured or hostile.
 */
export async function pinAddress(
  hostname: string,
  allowed: readonly Network[],
  resolve: Resolve = systemResolve,
): Promise<ResolvedAddress> {
  const host = normalizeHostname(hostname);
  const literal = parseIp(host);
  const addresses = literal ? [{ address: host, family: literal.family }] : await resolve(host);
  for (const { address } of addresses) {
    const ip = parseIp(address);
    const why = ip ? refusedAddress(ip, allowed) : 'not an IP address';
    if (why) {
      const via = literal ? '' : ` resolves to ${address}, which`;
      throw new RefusedAddressError(`${host}${via} is ${why}: refused, no request was made`);
    }
  }
  const [first] = addresses;
  if (!first) throw new Error(`${host} has no address`);
  return first;
}
