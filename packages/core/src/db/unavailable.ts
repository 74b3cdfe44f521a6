/**
 * Whether an error means PostgreSQL cannot be reached right now (refused, reset, shutting down,
 * starting up, timed out) rather than that the query was wrong. The API answers these with 503
 * `unavailable`; the worker retries the write instead of losing a finished build.
 *
 * Errors arrive in several wrappings: pg's own (a socket errno or a SQLSTATE), @prisma/adapter-pg's
 * DriverAdapterError (`cause.kind`), and Prisma's known errors (P10xx codes, the adapter error in
 * `meta.driverAdapterError`). Each layer is looked at, a few levels deep.
 */
const PRISMA_CODES = new Set(['P1001', 'P1002', 'P1008', 'P1017', 'P2024', 'P2037']);
const ADAPTER_KINDS = new Set([
  'DatabaseNotReachable',
  'ConnectionClosed',
  'SocketTimeout',
  'TooManyConnections',
]);
const SOCKET_CODES = new Set([
  'ECONNREFUSED',
  'ECONNRESET',
  'ETIMEDOUT',
  'EPIPE',
  'ENOTFOUND',
  'EHOSTUNREACH',
]);
// SQLSTATE class 08 (connection exception), 57P01-57P03 (admin/crash shutdown, cannot connect now), 53300 (too many connections).
const SQLSTATE = /^(08[0-9A-Z]{3}|57P0[1-3]|53300)$/;
const MESSAGES =
  /Connection terminated|Can't reach database server|Server has closed the connection|the database system is (starting up|shutting down|in recovery)|terminating connection due to administrator command|timeout exceeded when trying to connect|Query read timeout|Client has encountered a connection error/i;

export function isDatabaseUnavailable(err: unknown, depth = 0): boolean {
  if (typeof err !== 'object' || err === null || depth > 4) return false;
  const e = err as {
    code?: unknown;
    kind?: unknown;
    message?: unknown;
    cause?: unknown;
    meta?: { driverAdapterError?: unknown };
  };
  const code = typeof e.code === 'string' ? e.code : '';
  if (PRISMA_CODES.has(code) || SOCKET_CODES.has(code) || SQLSTATE.test(code)) return true;
  if (typeof e.kind === 'string' && ADAPTER_KINDS.has(e.kind)) return true;
  if (typeof e.kind === 'string' && e.kind === 'postgres' && SQLSTATE.test(String(e.code ?? ''))) return true;
  if (typeof e.message === 'string' && MESSAGES.test(e.message)) return true;
  return (
    isDatabaseUnavailable(e.cause, depth + 1) || isDatabaseUnavailable(e.meta?.driverAdapterError, depth + 1)
  );
}

/**
 * Whether an insert failed on a unique index: Prisma's P2002, or PostgreSQL's unique_violation
 * (23505) from a query on the pool (HotQueries).
 */
export function isUniqueViolation(err: unknown): boolean {
  const code = (err as { code?: unknown } | null)?.code;
  return code === 'P2002' || code === '23505';
}
