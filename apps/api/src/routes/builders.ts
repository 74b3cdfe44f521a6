import {
  AppError,
  builderCapabilitiesKey,
  builderHealthKey,
  builderLeaseKey,
  type PublishedBuilderHealth,
  parseBuilderCapabilities,
  redactAddress,
} from '@kiln/core';
import type { FastifyInstance } from 'fastify';
import { currentBuilders } from '../builder-members.js';
import type { ApiDeps } from '../deps.js';
import { buildErrors } from '../schemas.js';

/**
 * The builders (a `dns+tcp://` name: its members) as the workers last saw them. The API does not talk to builders: the
 * health comes from what the workers publish in Redis (absent when none has checked a builder
 * lately: `healthy: null`), the load from the live leases every worker takes there, and the
 * capabilities (BuildKit version, platforms, features) from the last check that reached the
 * builder, kept while it is down (null before any worker has reached it).
 */
export function builderRoutes(deps: ApiDeps) {
  const builderSchema = {
    type: 'object',
    properties: {
      address: { type: 'string' },
      concurrency: { type: 'integer' },
      load: { type: 'integer' },
      /** null: no worker has checked the builder recently. */
      healthy: { type: ['boolean', 'null'] },
      lastError: { type: ['string', 'null'] },
      checkedAt: { type: ['string', 'null'], format: 'date-time' },
      platform: { type: ['string', 'null'] },
      /** null: no worker has reached the builder yet. */
      capabilities: {
        type: ['object', 'null'],
        properties: {
          /** null: the daemon has no Control.Info (BuildKit before 0.11). */
          version: { type: ['string', 'null'] },
          platforms: { type: 'array', items: { type: 'string' } },
          features: { type: 'array', items: { type: 'string' } },
        },
        required: ['version', 'platforms', 'features'],
      },
    },
    required: [
      'address',
      'concurrency',
      'load',
      'healthy',
      'lastError',
      'checkedAt',
      'platform',
      'capabilities',
    ],
  } as const;

  return async (app: FastifyInstance) => {
    app.get(
      '/v1/builders',
      {
        schema: {
          summary: 'The BuildKit daemons builds run on: health, load and capacity',
          response: {
            200: {
              type: 'object',
              properties: { items: { type: 'array', items: builderSchema } },
              required: ['items'],
            },
            ...buildErrors,
          },
        },
      },
      async () => {
        const builders = await currentBuilders(deps).catch((err: Error) => {
          throw new AppError('unavailable', `Redis does not answer: ${err.message}`);
        });
        const replies = await deps.redis
          .pipeline([
            ['time'],
            ...builders.map((b) => ['get', builderHealthKey(b.address)]),
            ...builders.map((b) => ['zrange', builderLeaseKey(b.address), '0', '-1', 'WITHSCORES']),
            ['hmget', builderCapabilitiesKey(), ...builders.map((b) => b.address)],
          ])
          .exec()
          .catch((err: Error) => {
            throw new AppError('unavailable', `Redis does not answer: ${err.message}`);
          });
        const value = (i: number): unknown => {
          const [err, v] = replies?.[i] ?? [new Error('no reply'), null];
          if (err) throw new AppError('unavailable', `Redis does not answer: ${err.message}`);
          return v;
        };
        const [seconds, micros] = value(0) as [string, string];
        const now = Number(seconds) * 1000 + Math.floor(Number(micros) / 1000);
        const capabilities = value(1 + 2 * builders.length) as unknown[];
        const items = builders.map((b, i) => {
          const health = parseHealth(value(1 + i));
          // Leases past their expiry belong to workers that died; they no longer count.
          const leases = value(1 + builders.length + i) as string[];
          const scores = leases.filter((_, j) => j % 2 === 1).map(Number);
          return {
            address: redactAddress(b.address),
            concurrency: b.concurrency,
            load: scores.filter((expiry) => expiry > now).length,
            healthy: health?.healthy ?? null,
            lastError: health?.lastError ? redactAddress(health.lastError) : null,
            checkedAt: health?.checkedAt ?? null,
            platform: health?.platform ?? null,
            capabilities: parseBuilderCapabilities(capabilities[i]) ?? null,
          };
        });
        return { items };
      },
    );
  };
}

function parseHealth(raw: unknown): PublishedBuilderHealth | undefined {
  if (typeof raw !== 'string') return undefined;
  try {
    const v = JSON.parse(raw) as PublishedBuilderHealth;
    return typeof v === 'object' && v !== null && typeof v.healthy === 'boolean' ? v : undefined;
  } catch {
    return undefined;
  }
}
