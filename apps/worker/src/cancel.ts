/**
 * Cancel requests: the API publishes a build id on CHANNEL_CANCEL; every worker process hears
 * it and the one running that build aborts its solve. A subscribed ioredis connection can do
 * nothing else, hence a connection of its own.
 */
import { CHANNEL_CANCEL, type Logger } from '@kiln/core';
import { Redis, type RedisOptions } from 'ioredis';
import type { ActiveBuilds } from './active-builds.js';

/** A plain build id, or JSON `{"buildId": "..."}`. */
export function parseCancelMessage(message: string): string | undefined {
  const text = message.trim();
  if (text.startsWith('{')) {
    try {
      const parsed = JSON.parse(text) as { buildId?: unknown; id?: unknown };
      const id = parsed.buildId ?? parsed.id;
      return typeof id === 'string' && id !== '' ? id : undefined;
    } catch {
      return undefined;
    }
  }
  return text === '' ? undefined : text;
}

export class CancelListener {
  private subscriber: Redis | undefined;

  constructor(
    private readonly redisUrl: string,
    private readonly active: ActiveBuilds,
    private readonly logger: Logger,
    private readonly redisOptions: RedisOptions = {},
  ) {}

  async start(): Promise<void> {
    if (this.subscriber) return;
    const subscriber = new Redis(this.redisUrl, { ...this.redisOptions, lazyConnect: true });
    this.subscriber = subscriber;
    subscriber.on('error', (err) => this.logger.warn({ err: err.message }, 'cancel subscriber: redis error'));
    subscriber.on('message', (channel: string, message: string) => {
      if (channel !== CHANNEL_CANCEL) return;
      const buildId = parseCancelMessage(message);
      if (!buildId) {
        this.logger.warn({ message: message.slice(0, 200) }, 'ignoring a malformed cancel message');
        return;
      }
      const here = this.active.cancel(buildId);
      if (here) this.logger.info({ buildId }, 'cancel requested: aborting the build');
    });
    await subscriber.connect();
    // ioredis re-subscribes by itself after a reconnect.
    await subscriber.subscribe(CHANNEL_CANCEL);
  }

  async stop(): Promise<void> {
    const subscriber = this.subscriber;
    this.subscriber = undefined;
    if (!subscriber) return;
    try {
      await subscriber.quit();
    } catch {
      subscriber.disconnect();
    }
  }
}
