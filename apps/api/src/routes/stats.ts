import { readMinuteStats } from '@kiln/core';
import type { FastifyInstance } from 'fastify';
import type { ApiDeps } from '../deps.js';
import { buildErrors } from '../schemas.js';

/**
 * The project's builds minute by minute over the last hours, for the dashboard's status charts:
 * from per-minute counters kept as builds finish (@kiln/core's metrics/minute-stats.ts).
 */
export function statsRoutes(deps: ApiDeps) {
  const minuteSchema = {
    type: 'object',
    properties: {
      at: { type: 'string', format: 'date-time' },
      finished: { type: 'object', additionalProperties: { type: 'integer' } },
      durationP50: { type: ['number', 'null'] },
      durationP90: { type: ['number', 'null'] },
      cacheHits: { type: 'integer' },
      cacheMisses: { type: 'integer' },
    },
    required: ['at', 'finished', 'durationP50', 'durationP90', 'cacheHits', 'cacheMisses'],
  } as const;
  return async (app: FastifyInstance) => {
    app.get<{ Querystring: { hours: number } }>(
      '/v1/stats',
      {
        schema: {
          summary:
            "The project's builds per minute over the last hours: finished by status, duration percentiles (bucket bounds, s), result-cache look-ups",
          querystring: {
            type: 'object',
            properties: { hours: { type: 'integer', minimum: 1, maximum: 24, default: 6 } },
            additionalProperties: false,
          },
          response: {
            200: {
              type: 'object',
              properties: { minutes: { type: 'array', items: minuteSchema } },
              required: ['minutes'],
            },
            ...buildErrors,
          },
        },
      },
      async (req) => ({ minutes: await readMinuteStats(deps.redis, req.query.hours * 60, req.projectId) }),
    );
  };
}
