/** A builder leased for one build: renews its lease until released, and counts its use of the client. */
import type { BuildkitClient } from '@kiln/buildkit-client';
import type { Logger } from '@kiln/core';
import type { BuilderClients } from './clients.js';
import { errorMessage } from './error-message.js';
import type { LeaseStore } from './lease-store.js';

export class Lease {
  private timer: NodeJS.Timeout | undefined;
  private released = false;
  private usedClient: BuildkitClient | undefined;

  constructor(
    private readonly deps: {
      store: LeaseStore;
      clients: BuilderClients;
      logger: Logger;
      /** Called with the build first in this builder's line once the slot is free (pool.ts). */
      wakeWaiter?: (buildId: string) => Promise<void>;
    },
    readonly address: string,
    readonly projectId: string,
    readonly buildId: string,
    /** This run's own: another run of the same build takes the lease over with another. */
    private readonly token: string,
  ) {
    // Every third of the TTL: two renewals may fail before the lease expires.
    this.timer = setInterval(() => void this.renew(), Math.max(100, deps.store.ttlMs / 3));
    this.timer.unref();
  }

  /** The builder's client, connecting if needed (BuildkitConnectionError when it cannot). */
  async client(): Promise<BuildkitClient> {
    const client = await this.deps.clients.clientFor(this.address);
    if (this.usedClient !== client) {
      if (this.usedClient) this.deps.clients.unuse(this.usedClient);
      this.deps.clients.use(client);
      this.usedClient = client;
    }
    return client;
  }

  private async renew(): Promise<void> {
    if (this.released) return;
    const where = { builder: this.address, buildId: this.buildId };
    try {
      const outcome = await this.deps.store.renew(this.address, this.projectId, this.buildId, this.token);
      if (outcome === 're-created') {
        this.deps.logger.warn(where, 'lease had expired before its renewal; re-created it');
      } else if (outcome === 'superseded') {
        // Another run of this build took the lease over (or has ended it): the slot is its own.
        clearInterval(this.timer);
        this.deps.logger.warn(where, 'another run of this build holds the lease now; stopped renewing it');
      }
    } catch (err) {
      this.deps.logger.warn({ ...where, err: errorMessage(err) }, 'lease renewal failed');
    }
  }

  async release(): Promise<void> {
    if (this.released) return;
    this.released = true;
    clearInterval(this.timer);
    if (this.usedClient) this.deps.clients.unuse(this.usedClient);
    this.usedClient = undefined;
    const next = await this.deps.store.release(this.address, this.projectId, this.buildId, this.token);
    if (next && this.deps.wakeWaiter) {
      await this.deps.wakeWaiter(next).catch((err: unknown) => {
        this.deps.logger.debug(
          { builder: this.address, next, err: errorMessage(err) },
          'could not wake the next build',
        );
      });
    }
  }
}
