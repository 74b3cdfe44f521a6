import type {
  BuildLifecycle,
  BuildRepository,
  KilnConfig,
  Logger,
  ObjectStorage,
  PrismaClient,
  Tracing,
} from '@kiln/core';
import type { Queue } from 'bullmq';
import type { Redis } from 'ioredis';
import type { LogFollowers } from './log-followers.js';
import type { LogHub } from './log-hub.js';
import type { TokenCache } from './token-cache.js';

/** Everything the API talks to; main.ts builds them from the config, tests build their own. */
export interface ApiDeps {
  config: KilnConfig;
  db: PrismaClient;
  /** Reads of Build rows (its per-request ones in plain SQL on db's pool). */
  builds: BuildRepository;
  /** Every change of a build's state: insert, cancel, the result cache's answer. */
  lifecycle: BuildLifecycle;
  /** Token look-ups for authentication (cached; revocations go through it). */
  tokens: TokenCache;
  storage: ObjectStorage;
  redis: Redis;
  queue: Queue;
  /** QUEUE_EVENTS: completion-event deliveries the API's own final states (cancel, cache hit) insert. */
  eventQueue: Queue;
  logger: Logger;
  /** Live log reading shared by every follower of a build in this process. */
  logHub: LogHub;
  /** The open live log streams: the per-project cap, and ending them all on close. */
  followers: LogFollowers;
  /** Traces (KILN_OTLP_TRACES_URL), or NO_TRACING. */
  tracing: Tracing;
}
