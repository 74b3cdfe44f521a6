// Test support for the worker's integration tests (not part of the build: see tsconfig's exclude).
import { spawn } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { createReadStream, createWriteStream } from 'node:fs';
import { mkdtemp, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { pipeline } from 'node:stream/promises';
import {
  type Build,
  type BuildSpecInput,
  contextKey,
  createLogger,
  createPrismaClient,
  createStorage,
  FINAL_STATUSES,
  type KilnConfig,
  type Logger,
  loadConfig,
  migrateDatabase,
  type ObjectStorage,
  type PrismaClient,
  parseBuildSpec,
} from '@kiln/core';

export const env = {
  databaseUrl: process.env.KILN_TEST_DATABASE_URL ?? '',
  redisUrl: process.env.KILN_TEST_REDIS_URL ?? '',
  dockerSock: process.env.KILN_TEST_DOCKER_SOCK ?? '',
  dockerSock2: process.env.KILN_TEST_DOCKER_SOCK_2 ?? '',
};

export const testLogger = (): Logger =>
  createLogger('kiln-worker-test', process.env.KILN_TEST_LOG_LEVEL ?? 'silent');

export const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** A database of its own (kiln_t_<random>), migrated; `drop()` removes it. */
export async function createTestDatabase(): Promise<{
  url: string;
  prisma: PrismaClient;
  drop(): Promise<void>;
}> {
  const name = `kiln_t_${randomBytes(6).toString('hex')}`;
  const admin = createPrismaClient(env.databaseUrl, { maxConnections: 1 });
  await admin.$executeRawUnsafe(`CREATE DATABASE ${name}`);
  const url = new URL(env.databaseUrl);
  url.pathname = `/${name}`;
  await migrateDatabase(url.toString());
  const prisma = createPrismaClient(url.toString());
  return {
    url: url.toString(),
    prisma,
    async drop() {
      await prisma.$disconnect();
      await admin.$executeRawUnsafe(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`);
      await admin.$disconnect();
    },
  };
}

export async function createTestStorage(): Promise<{
  storage: ObjectStorage;
  root: string;
  cleanup(): Promise<void>;
}> {
  const root = await mkdtemp(path.join(tmpdir(), 'kiln-wk-objects-'));
  const storage = await createStorage({
    kind: 'local',
    root,
    publicBaseUrl: 'http://127.0.0.1:9',
    signingKey: 'test-signing-key-test-signing-key-0123456789',
  });
  return { storage, root, cleanup: () => rm(root, { recursive: true, force: true }) };
}

export function testConfig(
  over: Partial<KilnConfig> & Pick<KilnConfig, 'databaseUrl' | 'builders'>,
): KilnConfig {
  // Every setting's default, so a new one needs no copy here; then what these tests rely on.
  const defaults = loadConfig({
    DATABASE_URL: over.databaseUrl,
    REDIS_URL: env.redisUrl,
    KILN_SIGNING_KEY: 'x'.repeat(32),
  });
  return {
    ...defaults,
    port: 0,
    host: '127.0.0.1',
    publicUrl: 'http://127.0.0.1:9',
    logLevel: 'silent',
    dataDir: tmpdir(),
    storage: {
      kind: 'local',
      root: tmpdir(),
      publicBaseUrl: 'http://127.0.0.1:9',
      signingKey: 'x'.repeat(32),
    },
    workerConcurrency: 4,
    buildTimeoutSeconds: 120,
    buildAttempts: 3,
    limits: {
      maxContextBytes: 1024 ** 3,
      maxContextEntries: 100_000,
      maxUploadsPerProject: 8,
      uploadSpoolBytes: 2 * 1024 ** 3,
    },
    events: { ...defaults.events, attempts: 3, backoffMs: 1000, timeoutSeconds: 10 },
    ...over,
  };
}

/** Tars `dir` (GNU tar, like an upload would be) and stores it content-addressed. */
export async function uploadContext(
  storage: ObjectStorage,
  dir: string,
): Promise<{ key: string; digest: string; size: number }> {
  const work = await mkdtemp(path.join(tmpdir(), 'kiln-wk-tar-'));
  try {
    const file = path.join(work, 'context.tar');
    await new Promise<void>((resolve, reject) => {
      const child = spawn('tar', ['--format=pax', '-C', dir, '-cf', file, '.'], { stdio: 'inherit' });
      child.on('error', reject);
      child.on('close', (code) => (code === 0 ? resolve() : reject(new Error(`tar exited ${code}`))));
    });
    const hash = createHash('sha256');
    await pipeline(createReadStream(file), hash);
    const hex = hash.digest('hex');
    const key = contextKey(hex);
    await storage.put(key, createReadStream(file));
    return { key, digest: `sha256:${hex}`, size: (await stat(file)).size };
  } finally {
    await rm(work, { recursive: true, force: true });
  }
}

export async function createBuildRow(
  prisma: PrismaClient,
  projectId: string,
  context: { key: string; digest: string; size: number },
  spec: BuildSpecInput,
  extra: { status?: 'queued' | 'running'; createdAt?: Date; builder?: string; attempts?: number } = {},
): Promise<Build> {
  return prisma.build.create({
    data: {
      projectId,
      spec: JSON.parse(JSON.stringify(parseBuildSpec(spec))),
      contextKey: context.key,
      contextDigest: context.digest,
      contextSize: BigInt(context.size),
      ...extra,
    },
  });
}

/** Polls the row until it is final (or `until` says so). */
export async function waitForBuild(
  prisma: PrismaClient,
  id: string,
  timeoutMs = 60_000,
  until: (b: Build) => boolean = (b) => FINAL_STATUSES.has(b.status),
): Promise<Build> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const row = await prisma.build.findUniqueOrThrow({ where: { id } });
    if (until(row)) return row;
    if (Date.now() > deadline) {
      throw new Error(`build ${id} still ${row.status} after ${timeoutMs} ms (${row.errorMessage ?? ''})`);
    }
    await sleep(100);
  }
}

export async function downloadTo(storage: ObjectStorage, key: string, file: string): Promise<void> {
  const { body } = await storage.get(key);
  await pipeline(body, createWriteStream(file));
}

export async function readObject(storage: ObjectStorage, key: string): Promise<string> {
  const { body } = await storage.get(key);
  const chunks: Buffer[] = [];
  for await (const chunk of body) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks).toString('utf8');
}
