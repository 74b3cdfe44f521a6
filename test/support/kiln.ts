// A real Kiln for tests: the API (listening on loopback) and, when asked, a worker, in this
// process, on a fresh database and Redis db of the services `npm test` provides, with local
// storage in a temp dir.
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { type ApiDeps, bootstrapProject, buildApp, createApiDeps } from '@kiln/api';
import { type KilnConfig, loadConfig } from '@kiln/core';
import { createWorker, type KilnWorker, type WorkerDeps } from '@kiln/worker';
import type { FastifyInstance } from 'fastify';
import { Redis } from 'ioredis';
import {
  createTestDatabase,
  freePort,
  type TestDatabase,
  testRedisUrl,
} from '../../packages/core/test-support/services.js';

export interface TestKiln {
  url: string;
  /** A token of the project named in the options. */
  token: string;
  dataDir: string;
  config: KilnConfig;
  deps: ApiDeps;
  app: FastifyInstance;
  db: TestDatabase;
  /** Connected to the same Redis db as Kiln, for assertions on queues and streams. */
  redis: Redis;
  worker?: KilnWorker;
  /** A token of another (or the same) project. */
  newToken(project: string): Promise<string>;
  stop(): Promise<void>;
}

export interface TestKilnOptions {
  /** Extra or overriding environment for loadConfig (undefined unsets a default). */
  env?: Record<string, string | undefined>;
  /** Also run a worker (builders: `KILN_TEST_DOCKER_SOCK`, unless env sets KILN_BUILDERS). */
  worker?: boolean;
  /** The worker's own settings (intervals and the like). */
  workerDeps?: WorkerDeps;
  project?: string;
}

export async function startTestKiln(options: TestKilnOptions = {}): Promise<TestKiln> {
  const db = await createTestDatabase();
  const dataDir = await fs.mkdtemp(path.join(os.tmpdir(), 'kiln-test-'));
  const redisUrl = testRedisUrl();
  const redis = new Redis(redisUrl);
  await redis.flushdb();
  const port = await freePort();
  const url = `http://127.0.0.1:${port}`;
  const socket = process.env.KILN_TEST_DOCKER_SOCK;
  const config = loadConfig({
    KILN_PORT: String(port),
    KILN_PUBLIC_URL: url,
    DATABASE_URL: db.url,
    REDIS_URL: redisUrl,
    KILN_DATA_DIR: dataDir,
    KILN_SIGNING_KEY: 'k'.repeat(40),
    KILN_LOG_LEVEL: 'silent',
    // Test receivers and git servers listen on loopback, which Kiln refuses by default (SSRF);
    // test/security/tenants-ssrf.test.ts turns this off to see the refusals.
    KILN_EVENT_ALLOWED_NETWORKS: '127.0.0.0/8,::1/128',
    KILN_GIT_ALLOWED_NETWORKS: '127.0.0.0/8,::1/128',
    ...(socket ? { KILN_BUILDERS: `docker://${socket}` } : {}),
    ...options.env,
  });
  // A start that fails half-way stops what it started: open connections would keep the test
  // process (and so `npm test`) alive after the failure.
  const undo: Array<() => Promise<void>> = [
    async () => redis.disconnect(),
    () => db.drop(),
    () => fs.rm(dataDir, { recursive: true, force: true }),
  ];
  let deps: Awaited<ReturnType<typeof createApiDeps>>;
  let app: FastifyInstance;
  let token: string;
  let worker: KilnWorker | undefined;
  try {
    deps = await createApiDeps(config);
    const started = deps;
    undo.unshift(() => started.close());
    app = await buildApp(deps);
    const listening = app;
    undo.unshift(() => listening.close());
    await app.listen({ port, host: '127.0.0.1' });
    token = await bootstrapProject(db.url, options.project ?? 'test');
    if (options.worker) {
      worker = createWorker(config, options.workerDeps);
      await worker.start();
    }
  } catch (err) {
    for (const step of undo) await step().catch(() => undefined);
    throw err;
  }
  return {
    url,
    token,
    dataDir,
    config,
    deps,
    app,
    db,
    redis,
    ...(worker ? { worker } : {}),
    newToken: (project) => bootstrapProject(db.url, project),
    async stop() {
      await worker?.stop();
      await app.close();
      await deps.close();
      redis.disconnect();
      await db.drop();
      await fs.rm(dataDir, { recursive: true, force: true });
    },
  };
}

/** Polls GET /v1/builds/:id through `api` every 200 ms until the build's status is one of `statuses`. */
export async function waitForStatus<T extends { status: string }>(
  api: (path: string) => Promise<Response>,
  id: string,
  statuses: string[],
  timeoutMs: number,
): Promise<T> {
  const end = Date.now() + timeoutMs;
  for (;;) {
    const b = (await (await api(`/v1/builds/${id}`)).json()) as T;
    if (statuses.includes(b.status)) return b;
    if (Date.now() > end) throw new Error(`build ${id} still ${b.status}`);
    await new Promise((r) => setTimeout(r, 200));
  }
}
