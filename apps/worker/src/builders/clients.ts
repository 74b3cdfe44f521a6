/**
 * One BuildkitClient per builder address, dialed lazily and shared by concurrent callers. A
 * client is replaced after a failure; the old one is closed once no running build uses it any
 * more (builds count their use with use()/unuse()).
 */
import type { BuildkitClient, TlsOptions } from '@kiln/buildkit-client';

/** `tls` is the builder's own (KILN_BUILDER_TLS_* for `tcp://` builders), undefined for plain ones. */
export type DialBuilder = (address: string, timeoutMs: number, tls?: TlsOptions) => Promise<BuildkitClient>;

interface Slot {
  tls?: TlsOptions;
  client?: BuildkitClient;
  connecting?: Promise<BuildkitClient>;
}

export class BuilderClients {
  private readonly slots: Map<string, Slot>;
  /** Running builds per client; a replaced client is closed when this drops to 0. */
  private readonly users = new Map<BuildkitClient, number>();
  private readonly retired = new Set<BuildkitClient>();
  private closed = false;

  constructor(
    builders: ReadonlyArray<{ address: string; tls?: TlsOptions }>,
    private readonly dial: DialBuilder,
    private readonly dialTimeoutMs: number,
  ) {
    this.slots = new Map(builders.map(({ address, tls }) => [address, tls ? { tls } : {}]));
  }

  /**
   * Knows a builder that joined the pool. Slots are never removed: a build may still use the
   * client of a member that left, and a slot is a few bytes.
   */
  add(address: string, tls?: TlsOptions): void {
    if (!this.slots.has(address)) this.slots.set(address, tls ? { tls } : {});
  }

  /** The connected client of `address` (connecting once, shared by concurrent callers). */
  async clientFor(address: string): Promise<BuildkitClient> {
    const slot = this.slots.get(address);
    if (!slot) throw new Error(`unknown builder ${address}`);
    if (slot.client) return slot.client;
    if (this.closed) throw new Error('the builder pool is closed');
    if (!slot.connecting) {
      slot.connecting = this.dial(address, this.dialTimeoutMs, slot.tls)
        .then((client) => {
          if (this.closed) {
            void client.close();
            throw new Error('the builder pool is closed');
          }
          slot.client = client;
          return client;
        })
        .finally(() => {
          slot.connecting = undefined;
        });
    }
    return slot.connecting;
  }

  /** Forgets the client of `address` (the next clientFor() dials again); closes it once unused. */
  replace(address: string): void {
    const slot = this.slots.get(address);
    const client = slot?.client;
    if (!slot || !client) return;
    slot.client = undefined;
    if ((this.users.get(client) ?? 0) > 0) this.retired.add(client);
    else void client.close().catch(() => {});
  }

  use(client: BuildkitClient): void {
    this.users.set(client, (this.users.get(client) ?? 0) + 1);
  }

  unuse(client: BuildkitClient): void {
    const n = (this.users.get(client) ?? 1) - 1;
    if (n > 0) {
      this.users.set(client, n);
      return;
    }
    this.users.delete(client);
    if (this.retired.delete(client)) void client.close().catch(() => {});
  }

  /** Closes every client, used or not; clientFor() refuses from now on. */
  async close(): Promise<void> {
    this.closed = true;
    const clients = new Set<BuildkitClient>([...this.users.keys(), ...this.retired]);
    for (const slot of this.slots.values()) {
      if (slot.client) clients.add(slot.client);
      slot.client = undefined;
    }
    this.users.clear();
    this.retired.clear();
    await Promise.all([...clients].map((c) => c.close().catch(() => {})));
  }
}
