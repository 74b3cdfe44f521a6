/**
 * Which builder built a project last, remembered in Redis for a while: its cache likely holds
 * the project's layers, so the next build of the project prefers it.
 */
import type { Redis } from 'ioredis';

export class ProjectAffinity {
  constructor(
    private readonly redis: Redis,
    private readonly prefix: string,
    private readonly ttlSeconds: number,
  ) {}

  key(projectId: string): string {
    return `${this.prefix}:affinity:${projectId}`;
  }

  /** The address that built `projectId` last, if remembered. */
  get(projectId: string): Promise<string | null> {
    return this.redis.get(this.key(projectId));
  }

  async set(projectId: string, address: string): Promise<void> {
    await this.redis.set(this.key(projectId), address, 'EX', this.ttlSeconds);
  }
}
