import type { Logger, TokenRecord } from '@kiln/core';
import type { Redis } from 'ioredis';

/** Where an API that revoked a token tells every replica (the message is the token's id). */
export const TOKEN_REVOKED_CHANNEL = 'kiln:tokens:revoked';

export interface TokenCacheOptions {
  /** Reads a token row by the sha256 of its secret (PostgreSQL). */
  load: (tokenHash: string) => Promise<TokenRecord | null>;
  /** A connection of its own: once subscribed, it can do nothing else. */
  subscriber: Redis;
  /** Publishes revocations (the API's shared connection). */
  publisher: Redis;
  logger: Logger;
  /** Longest an entry is trusted without a message; bounds the damage of a message lost in transit. */
  ttlMs?: number;
  maxEntries?: number;
}

/**
 * Live tokens recently seen, by hash, so that an authenticated request costs one PostgreSQL
 * round trip instead of two (GET /v1/builds/:id went from two queries to one).
 *
 * Revocation stays immediate: the API that revokes evicts before it answers, and publishes on
 * TOKEN_REVOKED_CHANNEL; every replica evicts when the message arrives. While the subscription is
 * not up (Redis down or reconnecting) messages may be missed, so the cache is emptied and serves
 * nothing until it is subscribed again. Unknown and revoked tokens are never cached.
 */
export class TokenCache {
  private readonly entries = new Map<string, { token: TokenRecord; until: number }>();
  private live = false;
  /** Bumped by every eviction: a look-up that started before one must not store what it read. */
  private epoch = 0;
  private readonly ttlMs: number;
  private readonly maxEntries: number;
  private readonly revokedListeners = new Set<(tokenId: string) => void>();

  constructor(private readonly opts: TokenCacheOptions) {
    this.ttlMs = opts.ttlMs ?? 10_000;
    this.maxEntries = opts.maxEntries ?? 10_000;
    const { subscriber } = opts;
    subscriber.on('message', (channel: string, tokenId: string) => {
      if (channel === TOKEN_REVOKED_CHANNEL) this.evict(tokenId);
    });
    subscriber.on('ready', () => this.subscribe());
    subscriber.on('close', () => this.goOffline());
    subscriber.on('error', (err: Error) => opts.logger.warn({ err: err.message }, 'token cache subscriber'));
  }

  /** The live token for this hash if this process holds it, without asking PostgreSQL. */
  cached(tokenHash: string): TokenRecord | undefined {
    const hit = this.entries.get(tokenHash);
    return hit && hit.until > Date.now() ? hit.token : undefined;
  }

  /** The live token for this hash, or null (unknown or revoked). */
  async resolve(tokenHash: string): Promise<TokenRecord | null> {
    const hit = this.cached(tokenHash);
    if (hit) return hit;
    const epoch = this.epoch;
    const token = await this.opts.load(tokenHash);
    if (token && !token.revokedAt && this.live && epoch === this.epoch) this.store(tokenHash, token);
    return token;
  }

  /** After the row was marked revoked: forget it here, then tell the other replicas. */
  async revoked(tokenId: string): Promise<void> {
    this.evict(tokenId);
    await this.opts.publisher.publish(TOKEN_REVOKED_CHANNEL, tokenId).catch((err: Error) => {
      // Replicas that cannot hear it are cut off from Redis too, and so not caching.
      this.opts.logger.warn({ err: err.message, tokenId }, 'could not announce a token revocation');
    });
  }

  /**
   * Calls `listener` with the id of every token this process learns is revoked (its own
   * revocations and the replicas' messages), for what outlives a request: live log streams.
   * Returns the unsubscribe function.
   */
  onRevoked(listener: (tokenId: string) => void): () => void {
    this.revokedListeners.add(listener);
    return () => this.revokedListeners.delete(listener);
  }

  private store(tokenHash: string, token: TokenRecord): void {
    if (this.entries.size >= this.maxEntries) {
      // Oldest first (Map keeps insertion order): a simple bound, not an LRU.
      const oldest = this.entries.keys().next().value as string;
      this.entries.delete(oldest);
    }
    this.entries.set(tokenHash, { token, until: Date.now() + this.ttlMs });
  }

  private evict(tokenId: string): void {
    this.epoch++;
    for (const [hash, entry] of this.entries) {
      if (entry.token.id === tokenId) this.entries.delete(hash);
    }
    for (const listener of [...this.revokedListeners]) listener(tokenId);
  }

  private subscribe(): void {
    this.opts.subscriber.subscribe(TOKEN_REVOKED_CHANNEL).then(
      () => {
        // Whatever was revoked while we were away is not in a message any more.
        this.entries.clear();
        this.epoch++;
        this.live = true;
      },
      (err: Error) => this.opts.logger.warn({ err: err.message }, 'token cache could not subscribe'),
    );
  }

  private goOffline(): void {
    this.live = false;
    this.epoch++;
    this.entries.clear();
  }
}
