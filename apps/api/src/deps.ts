import type { HotQueries, KilnConfig, Logger, ObjectStorage, PrismaClient } from '@kiln/core';
import type { Queue } from 'bullmq';
import type { Redis } from 'ioredis';
import type { TokenCache } from './token-cache.js';

/** Everything the API talks to; main.ts builds them from the config, tests build their own. */
export interface ApiDeps {
  config: KilnConfig;
  db: PrismaClient;
  /** Per-request queries (auth, a build by id, the result-cache lookup, the insert) in plain SQL on db's pool. */
  queries: HotQueries;
  /** Token look-ups for authentication (cached; revocations go through it). */
  tokens: TokenCache;
  storage: ObjectStorage;
  redis: Redis;
  queue: Queue;
  /** QUEUE_EVENTS: completion-event deliveries the API's own final states (cancel, cache hit) insert. */
  eventQueue: Queue;
  logger: Logger;
}
