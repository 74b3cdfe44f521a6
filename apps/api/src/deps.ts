import type { KilnConfig, Logger, ObjectStorage, PrismaClient } from '@kiln/core';
import type { Queue } from 'bullmq';
import type { Redis } from 'ioredis';

/** Everything the API talks to; main.ts builds them from the config, tests build their own. */
export interface ApiDeps {
  config: KilnConfig;
  db: PrismaClient;
  storage: ObjectStorage;
  redis: Redis;
  queue: Queue;
  logger: Logger;
}
