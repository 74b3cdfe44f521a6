/**
 * `node apps/worker/dist/migrate.js`: checks the configuration, applies pending migrations and
 * exits (0, or 1 naming what failed). Kubernetes runs it as a Job before a rollout
 * (deploy/kubernetes/base/migrate-job.yaml), so a failing migration stops there rather than in
 * every replica; the API and the worker still migrate at start-up, which is then a no-op.
 */
import { ConfigError, createLogger, loadConfig, migrateDatabase } from '@kiln/core';

try {
  const config = loadConfig();
  const logger = createLogger('kiln-migrate', config.logLevel);
  const { applied } = await migrateDatabase(config.databaseUrl, {
    info: (msg) => logger.info(msg),
    warn: (msg) => logger.warn(msg),
  });
  logger.info({ applied }, applied.length > 0 ? 'migrations applied' : 'the database is up to date');
} catch (err) {
  const what = err instanceof ConfigError ? 'configuration error' : 'migration failed';
  process.stderr.write(`kiln-migrate: ${what}: ${(err as Error).message}\n`);
  process.exit(1);
}
