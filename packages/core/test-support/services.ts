// Per-test-file resources on the services `npm test` starts: a fresh PostgreSQL database
// (migrated) and a Redis database number of its own, so test files never see each other's data.
import { randomBytes } from 'node:crypto';
import pg from 'pg';
import { migrateDatabase } from '../src/db/index.js';

function required(name: string): string {
  const v = process.env[name];
  if (!v)
    throw new Error(`${name} is not set: run the tests through \`npm test\`, which starts the services`);
  return v;
}

export interface TestDatabase {
  url: string;
  drop(): Promise<void>;
}

/** A fresh database, migrated unless `migrated: false` (to see something migrate it). */
export async function createTestDatabase({ migrated = true } = {}): Promise<TestDatabase> {
  const base = required('KILN_TEST_DATABASE_URL');
  const name = `kiln_t_${randomBytes(6).toString('hex')}`;
  const admin = async (sql: string) => {
    const c = new pg.Client({ connectionString: base });
    await c.connect();
    try {
      await c.query(sql);
    } finally {
      await c.end();
    }
  };
  await admin(`CREATE DATABASE ${name}`);
  const url = new URL(base);
  url.pathname = `/${name}`;
  if (migrated) await migrateDatabase(url.toString());
  return { url: url.toString(), drop: () => admin(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`) };
}

let nextRedisDb = 1 + (process.pid % 8);
/** A Redis URL on a database number no other test file in this run uses (16 available). */
export function testRedisUrl(): string {
  const url = new URL(required('KILN_TEST_REDIS_URL'));
  url.pathname = `/${nextRedisDb++ % 16}`;
  return url.toString();
}

/** A loopback port free right now, for a server whose public URL must be known before it listens. */
/** A port free on every one of `hosts` (loopback addresses standing for pods of one Service). */
export async function freePortOn(hosts: readonly string[]): Promise<number> {
  const { createServer } = await import('node:net');
  const free = (host: string, port: number) =>
    new Promise<number | undefined>((resolve) => {
      const s = createServer();
      s.once('error', () => resolve(undefined));
      s.listen(port, host, () => {
        const { port: got } = s.address() as { port: number };
        s.close(() => resolve(got));
      });
    });
  for (;;) {
    const port = await free(hosts[0] ?? '127.0.0.1', 0);
    if (port === undefined) continue;
    const rest = await Promise.all(hosts.slice(1).map((h) => free(h, port)));
    if (rest.every((p) => p === port)) return port;
  }
}

export async function freePort(): Promise<number> {
  const { createServer } = await import('node:net');
  return new Promise((resolve, reject) => {
    const s = createServer().listen(0, '127.0.0.1', () => {
      const { port } = s.address() as { port: number };
      s.close(() => resolve(port));
    });
    s.on('error', reject);
  });
}
