import { ConfigError, loadConfig } from '@kiln/core';
import { buildApp } from './app.js';
import { createApiDeps } from './services.js';

/** `node apps/api/dist/main.js`: the API server; SIGTERM lets in-flight requests finish. */
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
    await app.close();
    await deps.close();
    process.exit(0);
  };
  process.once('SIGTERM', stop);
  process.once('SIGINT', stop);
}

await main();
