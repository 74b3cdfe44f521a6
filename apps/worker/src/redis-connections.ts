/**
 * The worker's Redis connections. BullMQ's retries for ever (maxRetriesPerRequest: null): its
 * blocking reads wait by design. Kiln's own commands (leases, logs, cancel requests, quotas)
 * fail instead of hanging, both while Redis is away and when it stops answering on a connection
 * that stays open (a frozen server, a partition that drops packets): a lease renewal waiting
 * for ever would stop every later renewal of that lease.
 */
import { Redis } from 'ioredis';

/** Far above what any of Kiln's commands takes; none of them blocks. */
const COMMAND_TIMEOUT_MS = 15_000;

export function bullConnection(url: string): Redis {
  return new Redis(url, { maxRetriesPerRequest: null });
}

export function commandConnection(url: string, commandTimeoutMs = COMMAND_TIMEOUT_MS): Redis {
  return new Redis(url, { commandTimeout: commandTimeoutMs });
}
