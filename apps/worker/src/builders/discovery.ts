/**
 * Builders named by DNS (`dns+tcp://name:port`, e.g. a Kubernetes headless Service): the name's
 * A and AAAA records are resolved every interval into members `tcp://ip:port`, handed to the
 * pool, and published in Redis (builderMembersKey) for the API, which resolves nothing.
 */
import { Resolver } from 'node:dns/promises';
import type { TlsOptions } from '@kiln/buildkit-client';
import { builderMembersKey, type Logger } from '@kiln/core';
import type { Redis } from 'ioredis';
import { errorMessage } from './error-message.js';

export const DNS_SCHEME = 'dns+tcp://';

export interface BuilderEntry {
  address: string;
  concurrency: number;
  tls?: TlsOptions;
}

/** DNS answers meaning "no such records", not "DNS failed": the name has no members now. */
const NO_RECORDS = new Set(['ENODATA', 'ENOTFOUND']);

export const isDiscovered = (address: string) => address.startsWith(DNS_SCHEME);

/** The members of `service` at the addresses `ips`: each dialed at the service's port, TLS checked against its name. */
export function membersOf(service: BuilderEntry, ips: readonly string[]): BuilderEntry[] {
  const { hostname, port } = new URL(service.address.replace(DNS_SCHEME, 'tcp://'));
  return ips.map((ip) => ({
    address: `tcp://${ip.includes(':') ? `[${ip}]` : ip}:${port}`,
    concurrency: service.concurrency,
    // A pod's certificate names the Service, never its own (changing) IP.
    ...(service.tls ? { tls: { serverName: hostname, ...service.tls } } : {}),
  }));
}

export interface BuilderDiscoveryOptions {
  services: readonly BuilderEntry[];
  /** `ip[:port]` servers to ask; empty: the system's configuration. */
  dnsServers: readonly string[];
  intervalMs: number;
  redis: Redis;
  keyPrefix: string;
  logger: Logger;
  /** Called after each round with a service's current members (also when unchanged). */
  onMembers: (service: string, members: BuilderEntry[]) => void;
}

export class BuilderDiscovery {
  private readonly resolver = new Resolver({ timeout: 2000, tries: 2 });
  private timer: NodeJS.Timeout | undefined;
  private round: Promise<void> | undefined;

  constructor(private readonly o: BuilderDiscoveryOptions) {
    if (o.dnsServers.length > 0) this.resolver.setServers([...o.dnsServers]);
  }

  /** Resolves every name once, then every interval in the background. */
  async start(): Promise<void> {
    if (this.o.services.length === 0) return;
    await this.resolveAll();
    this.timer ??= setInterval(() => void this.resolveAll(), this.o.intervalMs);
    this.timer.unref();
  }

  stop(): void {
    clearInterval(this.timer);
    this.timer = undefined;
  }

  /** One round over every name (joining one under way). */
  resolveAll(): Promise<void> {
    this.round ??= Promise.all(this.o.services.map((s) => this.resolve(s))).then(
      () => {
        this.round = undefined;
      },
      () => {
        this.round = undefined;
      },
    );
    return this.round;
  }

  private async resolve(service: BuilderEntry): Promise<void> {
    const { hostname } = new URL(service.address.replace(DNS_SCHEME, 'tcp://'));
    const answers = await Promise.allSettled([
      this.resolver.resolve4(hostname),
      this.resolver.resolve6(hostname),
    ]);
    const failures = answers.flatMap((a) =>
      a.status === 'rejected' && !NO_RECORDS.has((a.reason as { code?: string }).code ?? '')
        ? [a.reason]
        : [],
    );
    if (failures.length > 0) {
      // A DNS outage is not an empty Service: the members known stay until DNS answers again.
      this.o.logger.warn(
        { builder: service.address, err: errorMessage(failures[0]) },
        'could not resolve the builder name; keeping its members',
      );
      return;
    }
    const ips = answers.flatMap((a) => (a.status === 'fulfilled' ? a.value : [])).sort();
    const members = membersOf(service, ips);
    this.o.onMembers(service.address, members);
    const ttlSeconds = Math.max(30, Math.ceil((3 * this.o.intervalMs) / 1000));
    await this.o.redis
      .set(
        builderMembersKey(service.address, this.o.keyPrefix),
        JSON.stringify(members.map((m) => m.address)),
        'EX',
        ttlSeconds,
      )
      .catch((err: unknown) => {
        this.o.logger.warn(
          { builder: service.address, err: errorMessage(err) },
          'could not publish the builder members',
        );
      });
  }
}
