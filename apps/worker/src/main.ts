/**
 * The worker process (`scripts/run-app.sh worker` runs it with its memory settings). Reads the
 * environment (a bad value prints the ConfigError and exits 1), migrates the database, starts,
 * and on SIGTERM/SIGINT stops gracefully (a second signal exits at once).
 */
import { tmpdir } from 'node:os';
import { ConfigError, createLogger, type KilnConfig, loadConfig, migrateDatabase } from '@kiln/core';
import { createScratchDir } from './scratch.js';
import { createWorker } from './worker.js';

async function main(): Promise<void> {
  let config: KilnConfig;
  try {
    config = loadConfig();
  } catch (err) {
    if (err instanceof ConfigError) {
      process.stderr.write(`kiln-worker: configuration error: ${err.message}\n`);
      process.exit(1);
    }
    throw err;
  }
  const logger = createLogger('kiln-worker', config.logLevel, config.logFormat);
  await migrateDatabase(config.databaseUrl, {
    info: (msg) => logger.info(msg),
    warn: (msg) => logger.warn(msg),
  });
  // Every temp file of this process (build directories, the BuildKit client's proxy sockets) goes
  // into one directory of its own, which the next worker to start removes should this one be killed.
  const scratch = await createScratchDir(tmpdir(), logger);
  process.env.TMPDIR = scratch.dir;
  const removeScratch = () =>
    scratch.remove().catch((err: unknown) => {
      logger.warn(
        { dir: scratch.dir, err: (err as Error).message },
        'could not remove the scratch directory',
      );
    });
  const worker = createWorker(config, {
    logger,
    reconcileIntervalMs: config.reconcileIntervalSeconds * 1000,
    shutdownGraceMs: config.shutdownGraceSeconds * 1000,
  });

  let signals = 0;
  const onSignal = (signal: NodeJS.Signals) => {
    signals += 1;
    if (signals > 1) {
      logger.warn({ signal }, 'second signal: exiting now');
      process.exit(1);
    }
    logger.info({ signal }, 'stopping');
    worker.stop().then(
      () => removeScratch().then(() => process.exit(0)),
      (err: unknown) => {
        logger.error({ err: (err as Error).message }, 'stop failed');
        process.exit(1);
      },
    );
  };
  process.on('SIGTERM', onSignal);
  process.on('SIGINT', onSignal);

  try {
    await worker.start();
  } catch (err) {
    logger.error({ err: (err as Error).message }, 'worker failed to start');
    await worker.stop(0).catch(() => {});
    await removeScratch();
    process.exit(1);
  }
}

main().catch((err: unknown) => {
  process.stderr.write(`kiln-worker: ${(err as Error).stack ?? String(err)}\n`);
  process.exit(1);
});
