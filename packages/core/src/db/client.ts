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
 * build "running" while its lease went on being renewed. The query timeout is far above what
 * any of Kiln's queries take (they are indexed, retention pages; migrations use a client of
 * their own). pg-pool applies the connect timeout to a wait for a free connection too: a pool
 * busy for that long answers 503 as well.
 */
const CONNECT_TIMEOUT_MS = 30_000;
const QUERY_TIMEOUT_MS = 60_000;
/** Idle connections are probed by TCP keepalive after this, not after the kernel's two hours. */
const KEEPALIVE_DELAY_MS = 30_000;
const QUERY_TIMED_OUT = 'Query read timeout';

/**
 * pg's query timeout fails the call but leaves the statement running on the connection, and
 * what was queued behind it (a ROLLBACK) unsent: back in the pool, the connection would carry
 * its open transaction into the next caller's queries once the server answers again. A
 * connection whose query timed out is ended instead (the server rolls back what it held).
 */
class EndedOnTimeoutClient extends pg.Client {
  constructor(config?: string | pg.ClientConfig) {
    super(config);
    const query = this.query.bind(this) as (...args: unknown[]) => unknown;
    const watch = (err: unknown) => {
      if (err instanceof Error && err.message === QUERY_TIMED_OUT) this.endAfterTimeout();
    };
    Object.assign(this, {
      query: (...args: unknown[]) => {
        const last = args.at(-1);
        if (typeof last === 'function') {
          args[args.length - 1] = (err: unknown, ...rest: unknown[]) => {
            watch(err);
            return (last as (...a: unknown[]) => unknown)(err, ...rest);
          };
          return query(...args);
        }
        const result = query(...args);
        if (result instanceof Promise) result.catch(watch);
        return result;
      },
    });
  }

  private endAfterTimeout(): void {
    // end() marks it ending, so the pool drops it when it comes back; the socket goes now.
    this.end().catch(() => {});
    (this as unknown as { connection: { stream: { destroy(): void } } }).connection.stream.destroy();
  }
}

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
    Client: EndedOnTimeoutClient,
    connectionTimeoutMillis: CONNECT_TIMEOUT_MS,
    query_timeout: options.queryTimeoutMs ?? QUERY_TIMEOUT_MS,
    keepAlive: true,
    keepAliveInitialDelayMillis: KEEPALIVE_DELAY_MS,
    ...(options.maxConnections === undefined ? {} : { max: options.maxConnections }),
  };
}
