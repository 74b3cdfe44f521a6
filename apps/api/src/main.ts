import { ConfigError, loadConfig } from '@kiln/core';
import { buildApp } from './app.js';
import { createApiDeps } from './services.js';

/** The API server (`scripts/run-app.sh api` runs it with its memory settings); SIGTERM lets in-flight requests finish. */
async function main(): Promise<void> {
  let config: ReturnType<typeof loadConfig>;
  try {
    config = loadConfig();
  } catch (err) {
    if (err instanceof ConfigError) {
      process.stderr.write(`kiln-api: ${err.message}\n`);
      process.exit(1);
    }
    throw err;
  }
  const deps = await createApiDeps(config);
  const app = await buildApp(deps);
  await app.listen({ port: config.port, host: config.host });
  const stop = async () => {
    // In-flight requests finish; their keep-alive connections would then idle for Fastify's
    // keepAliveTimeout (72 s) before close() returns: close each one as soon as it is idle.
    const reap = setInterval(() => app.server.closeIdleConnections(), 250);
    await app.close();
    clearInterval(reap);
    await deps.close();
    process.exit(0);
  };
  process.once('SIGTERM', stop);
  process.once('SIGINT', stop);
}

await main();
