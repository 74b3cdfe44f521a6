import {
  BuildLifecycle,
  BuildRepository,
  createDatabase,
  createLogger,
  createStorage,
  type KilnConfig,
  migrateDatabase,
  QUEUE_BUILDS,
  QUEUE_EVENTS,
  removeStaleFiles,
  startTracing,
  TokenQueries,
} from '@kiln/core';
import { Queue } from 'bullmq';
import { Redis } from 'ioredis';
import type { ApiDeps } from './deps.js';
import { eventEnqueuer } from './events.js';
import { LogFollowers } from './log-followers.js';
import { LogHub } from './log-hub.js';
import { TokenCache } from './token-cache.js';
import { uploadTmpDir } from './upload.js';

/** Connects what the API needs, from the config; `close()` releases all of it. */
export async function createApiDeps(config: KilnConfig): Promise<ApiDeps & { close(): Promise<void> }> {
  const logger = createLogger('kiln-api', config.logLevel, config.logFormat);
  const tracing = await startTracing(config.otlpTracesUrl, 'kiln-api');
  await migrateDatabase(config.databaseUrl, logger);
  const database = createDatabase(config.databaseUrl, {
    onConnectionError: (err) => logger.warn({ err: err.message }, 'postgresql dropped a connection'),
  });
  const storage = await createStorage(config.storage);
  // Uploads a killed API was receiving (no request lasts longer than requestTimeoutSeconds).
  const stale = await removeStaleFiles(
    uploadTmpDir(config),
    /^upload-.+\.tar$/,
    2 * config.requestTimeoutSeconds * 1000,
  );
  if (stale.length > 0) logger.warn({ files: stale.length }, 'removed uploads of a stopped API');
  // Requests fail fast while Redis is down instead of queueing forever.
  const redis = new Redis(config.redisUrl, {
    maxRetriesPerRequest: 1,
    enableOfflineQueue: false,
    lazyConnect: false,
  });
  redis.on('error', (err) => logger.warn({ err: err.message }, 'redis'));
  const tokenQueries = new TokenQueries(database.pool);
  const subscriber = new Redis(config.redisUrl, { autoResubscribe: false });
  const tokens = new TokenCache({
    load: (tokenHash) => tokenQueries.tokenByHash(tokenHash),
    subscriber,
    publisher: redis,
    logger,
  });
  const queue = new Queue(QUEUE_BUILDS, { connection: { url: config.redisUrl, maxRetriesPerRequest: 1 } });
  queue.on('error', (err) => logger.warn({ err: err.message }, 'queue'));
  const eventQueue = new Queue(QUEUE_EVENTS, {
    connection: { url: config.redisUrl, maxRetriesPerRequest: 1 },
  });
  eventQueue.on('error', (err) => logger.warn({ err: err.message }, 'event queue'));
  const builds = new BuildRepository(database.prisma, database.pool);
  const events = eventEnqueuer({ eventQueue, config, logger });
  const logHub = new LogHub({
    redis,
    reader: new Redis(config.redisUrl, { maxRetriesPerRequest: null }),
    statusOf: (id) => builds.statusOf(id),
    logger,
  });
  return {
    config,
    db: database.prisma,
    builds,
    lifecycle: new BuildLifecycle({
      repo: builds,
      redis,
      logger,
      events,
      metricsMaxProjects: config.metricsMaxProjects,
    }),
    tokens,
    storage,
    redis,
    queue,
    eventQueue,
    logger,
    logHub,
    tracing,
    followers: new LogFollowers(redis, config.logs.maxFollowersPerProject, (err) =>
      logger.warn({ err: err.message }, 'renewing the log followers in Redis failed'),
    ),
    async close() {
      logHub.close();
      await queue.close().catch(() => undefined);
      await eventQueue.close().catch(() => undefined);
      redis.disconnect();
      subscriber.disconnect();
      await database.close();
      await tracing.shutdown();
    },
  };
}
