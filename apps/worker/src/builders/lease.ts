/** A builder leased for one build: renews its lease until released, and counts its use of the client. */
import type { BuildkitClient } from '@kiln/buildkit-client';
import type { Logger } from '@kiln/core';
import type { BuilderClients } from './clients.js';
import { errorMessage } from './error-message.js';
import type { LeaseStore } from './lease-store.js';

export class Lease {
  private timer: NodeJS.Timeout | undefined;
  /** A renewal in progress: the next tick waits for it rather than pile up database reads. */
  private renewing = false;
  private released = false;
  private usedClient: BuildkitClient | undefined;
  private holdsBuild: (() => Promise<boolean>) | undefined;
  private onLost: (() => void) | undefined;
  /**
   * The lease had expired (this process was cut off): from then on every renewal asks whether
   * the build is still this run's, since the reconciler may take it back after a first yes.
   */
  private cutOff = false;

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
    this.renewEveryThirdOfTtl();
  }

  /** Two renewals may fail before the lease expires. */
  private renewEveryThirdOfTtl(): void {
    this.timer = setInterval(() => void this.renew(), Math.max(100, this.deps.store.ttlMs / 3));
    this.timer.unref();
  }

  private stopRenewing(): void {
    clearInterval(this.timer);
    this.timer = undefined;
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

  /**
   * Once this run has started its attempt: `holdsBuild` says whether the build is still this
   * run's. Another run of the build may take the lease over and then lose the start race (two
   * jobs for one build, after Redis lost data); its release would leave this running build
   * without a lease, and the reconciler would take it back. While `holdsBuild` says yes, a
   * renewal that finds the lease released by another run takes it back; one that finds another
   * run holding it (that run has not started yet, and may start the build again or let it go)
   * asks again next time. Renewals start again if such a take-over had stopped them before this
   * run started.
   * `onLost` is called once `holdsBuild` says no, after a take-over or at any renewal after the
   * lease was found expired (this process was away for a TTL: the build may have been taken back
   * or started again elsewhere): the run must stop, or it keeps solving, and holds a builder's
   * slot, for a build whose result it may no longer write.
   */
  heldFor(holdsBuild: () => Promise<boolean>, onLost: () => void): void {
    this.holdsBuild = holdsBuild;
    this.onLost = onLost;
    if (!this.released && !this.timer) this.renewEveryThirdOfTtl();
  }

  private async renew(): Promise<void> {
    if (this.released || this.renewing) return;
    this.renewing = true;
    const where = { builder: this.address, buildId: this.buildId };
    try {
      const outcome = await this.deps.store.renew(this.address, this.projectId, this.buildId, this.token);
      if (outcome === 're-created') {
        this.deps.logger.warn(where, 'lease had expired before its renewal; re-created it');
        this.cutOff = true;
      } else if (outcome === 'superseded') {
        await this.superseded(where);
        return;
      }
      if (this.cutOff && this.holdsBuild && !(await this.holdsBuild())) this.lost(where);
    } catch (err) {
      this.deps.logger.warn({ ...where, err: errorMessage(err) }, 'lease renewal failed');
    } finally {
      this.renewing = false;
    }
  }

  /** Another run of this build took the lease over (or has ended it). A failed check asks again next time. */
  private async superseded(where: { builder: string; buildId: string }): Promise<void> {
    if (this.holdsBuild) {
      if (!(await this.holdsBuild())) return this.lost(where);
      if (this.released) return;
      const outcome = await this.deps.store.renew(this.address, this.projectId, this.buildId, this.token, {
        reclaim: true,
      });
      if (outcome !== 'superseded') {
        this.deps.logger.warn(
          where,
          'another run of this build released its lease without running it; took it back',
        );
      }
      return;
    }
    // This run has not started the build yet: the slot is the other run's.
    this.stopRenewing();
    this.deps.logger.warn(where, 'another run of this build holds the lease now; stopped renewing it');
  }

  /** The build went on without this run (started again, or taken back). */
  private lost(where: { builder: string; buildId: string }): void {
    // A renewal under way when the run ended and released its lease: nothing left to stop.
    if (this.released) return;
    this.stopRenewing();
    this.deps.logger.warn(
      where,
      'this build is no longer this run’s (started again or taken back): stopping this run',
    );
    this.onLost?.();
  }

  async release(): Promise<void> {
    if (this.released) return;
    this.released = true;
    this.stopRenewing();
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
