import { PrismaPg } from '@prisma/adapter-pg';
import pg from 'pg';
import { PrismaClient } from './generated/client.js';

export interface PrismaClientOptions {
  /** Most connections the pool opens (pg's default: 10). */
  maxConnections?: number;
  /** How long a query may go unanswered before it fails (default QUERY_TIMEOUT_MS). */
  queryTimeoutMs?: number;
}

/**
 * A PostgreSQL that stops answering without closing its connections (its host gone, a
 * failover's old address black-holed, the server frozen) must fail calls, which the worker
 * retries and the API answers 503, not hold them for ever: a final write waiting on it kept its
 * build "running" while its lease went on being renewed. Both are far above what any of Kiln's
 * queries take (they are indexed, retention pages); migrations use a client of their own.
 */
const CONNECT_TIMEOUT_MS = 10_000;
const QUERY_TIMEOUT_MS = 60_000;

export interface DatabaseOptions extends PrismaClientOptions {
  /**
   * Told when PostgreSQL drops an idle connection (a restart, an administrator). The pool
   * replaces the connection by itself; without a listener pg's 'error' event would crash the process.
   */
  onConnectionError?: (err: Error) => void;
}

/**
 * A PrismaClient over @prisma/adapter-pg: the generated client (engineType "client") has no
 * native query engine and always needs a driver adapter. Call `$disconnect()` when done, or
 * the pool keeps the process alive.
 */
export function createPrismaClient(databaseUrl: string, options: PrismaClientOptions = {}): PrismaClient {
  return new PrismaClient({ adapter: new PrismaPg(poolConfig(databaseUrl, options)) });
}

/** Prisma and plain SQL (HotQueries) on one pg pool; `close()` ends both. */
export interface Database {
  prisma: PrismaClient;
  pool: pg.Pool;
  close(): Promise<void>;
}

const POOL_END_WAIT_MS = 5000;

export function createDatabase(databaseUrl: string, options: DatabaseOptions = {}): Database {
  const pool = new pg.Pool(poolConfig(databaseUrl, options));
  pool.on('error', options.onConnectionError ?? (() => {}));
  const prisma = new PrismaClient({ adapter: new PrismaPg(pool) });
  return {
    prisma,
    pool,
    async close() {
      await prisma.$disconnect();
      // pool.end() waits for every checked-out client. A request handler still running after
      // its client hung up can hold one forever (Prisma leaves it checked out when the
      // disconnect interrupts its transaction), so shutdown waits only so long.
      let timer: NodeJS.Timeout | undefined;
      await Promise.race([
        pool.end(),
        new Promise((resolve) => {
          timer = setTimeout(resolve, POOL_END_WAIT_MS);
        }),
      ]);
      clearTimeout(timer);
    },
  };
}

function poolConfig(databaseUrl: string, options: PrismaClientOptions): pg.PoolConfig {
  return {
    connectionString: databaseUrl,
    application_name: 'kiln',
    connectionTimeoutMillis: CONNECT_TIMEOUT_MS,
    query_timeout: options.queryTimeoutMs ?? QUERY_TIMEOUT_MS,
    // Found out by the kernel when nothing is being asked.
    keepAlive: true,
    ...(options.maxConnections === undefined ? {} : { max: options.maxConnections }),
  };
}
