import { PrismaPg } from '@prisma/adapter-pg';
import { PrismaClient } from './generated/client.js';

export interface PrismaClientOptions {
  /** Most connections the pool opens (pg's default: 10). */
  maxConnections?: number;
}

/**
 * A PrismaClient over @prisma/adapter-pg: the generated client (engineType "client") has no
 * native query engine and always needs a driver adapter. Call `$disconnect()` when done, or
 * the pool keeps the process alive.
 */
export function createPrismaClient(databaseUrl: string, options: PrismaClientOptions = {}): PrismaClient {
  const adapter = new PrismaPg({
    connectionString: databaseUrl,
    application_name: 'kiln',
    ...(options.maxConnections === undefined ? {} : { max: options.maxConnections }),
  });
  return new PrismaClient({ adapter });
}
