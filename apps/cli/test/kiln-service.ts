// A real Kiln for the CLI's integration tests: the API and a worker in this process (as
// test/e2e/service.test.ts starts them) on the services `npm test` provides: PostgreSQL,
// Redis and a private dockerd.
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { bootstrapProject, buildApp, createApiDeps } from '@kiln/api';
import { loadConfig } from '@kiln/core';
import { createWorker } from '@kiln/worker';
import { Redis } from 'ioredis';
import { createTestDatabase, freePort, testRedisUrl } from '../../../packages/core/test-support/services.js';

export interface RunningKiln {
  url: string;
  token: string;
  dataDir: string;
  stop(): Promise<void>;
}

export function dockerSocket(): string {
  const socket = process.env.KILN_TEST_DOCKER_SOCK;
  if (!socket) throw new Error('KILN_TEST_DOCKER_SOCK is not set: run through `npm test`');
  return socket;
}

export async function startKiln(): Promise<RunningKiln> {
  const socket = dockerSocket();
  const db = await createTestDatabase();
  const dataDir = await fs.mkdtemp(path.join(os.tmpdir(), 'kiln-cli-svc-'));
  const redisUrl = testRedisUrl();
  const redis = new Redis(redisUrl);
  await redis.flushdb();
  redis.disconnect();
  const port = await freePort();
  const url = `http://127.0.0.1:${port}`;
  const config = loadConfig({
    KILN_PORT: String(port),
    KILN_PUBLIC_URL: url,
    DATABASE_URL: db.url,
    REDIS_URL: redisUrl,
    KILN_DATA_DIR: dataDir,
    KILN_SIGNING_KEY: 'c'.repeat(40),
    KILN_LOG_LEVEL: 'silent',
    KILN_BUILDERS: `docker://${socket}`,
    KILN_BUILD_ATTEMPTS: '2',
  });
  const deps = await createApiDeps(config);
  const app = await buildApp(deps);
  await app.listen({ port, host: '127.0.0.1' });
  const token = await bootstrapProject(db.url, 'cli');
  const worker = createWorker(config);
  await worker.start();
  return {
    url,
    token,
    dataDir,
    async stop() {
      await worker.stop();
      await app.close();
      await deps.close();
      await db.drop();
      await fs.rm(dataDir, { recursive: true, force: true });
    },
  };
}
