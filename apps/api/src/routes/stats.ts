import { readMinuteStats, readOperatorStats } from '@kiln/core';
import type { FastifyInstance } from 'fastify';
import { staticTokenAuthenticator } from '../auth.js';
import type { ApiDeps } from '../deps.js';
import { buildErrors } from '../schemas.js';

const minuteProperties = {
  at: { type: 'string', format: 'date-time' },
  finished: { type: 'object', additionalProperties: { type: 'integer' } },
  durationP50: { type: ['number', 'null'] },
  durationP90: { type: ['number', 'null'] },
  cacheHits: { type: 'integer' },
  cacheMisses: { type: 'integer' },
} as const;
const minuteRequired = ['at', 'finished', 'durationP50', 'durationP90', 'cacheHits', 'cacheMisses'] as const;
const sampled = { type: ['integer', 'null'] } as const;
const hoursQuery = {
  type: 'object',
  properties: { hours: { type: 'integer', minimum: 1, maximum: 24, default: 6 } },
  additionalProperties: false,
} as const;

/** An answer of minutes (`minute`: its extra properties) and of any other `extra` properties. */
const minutesResponse = (minute: Record<string, unknown> = {}, extra: Record<string, unknown> = {}) => ({
  type: 'object',
  properties: {
    minutes: {
      type: 'array',
      items: {
        type: 'object',
        properties: { ...minuteProperties, ...minute },
        required: [...minuteRequired, ...Object.keys(minute)],
      },
    },
    ...extra,
  },
  required: ['minutes', ...Object.keys(extra)],
});

/**
 * The project's builds minute by minute over the last hours, for the dashboard's status charts:
 * from per-minute counters kept as builds finish (@kiln/core's metrics/minute-stats.ts).
 */
export function statsRoutes(deps: ApiDeps) {
  return async (app: FastifyInstance) => {
    app.get<{ Querystring: { hours: number } }>(
      '/v1/stats',
      {
        schema: {
          summary:
            "The project's builds per minute over the last hours: finished by status, duration percentiles (bucket bounds, s), result-cache look-ups",
          querystring: hoursQuery,
          response: {
            200: minutesResponse(),
            ...buildErrors,
          },
        },
      },
      async (req) => ({ minutes: await readMinuteStats(deps.redis, req.query.hours * 60, req.projectId) }),
    );
  };
}

/**
 * The operator's status page, behind KILN_OPERATOR_TOKEN: every project's builds minute by minute
 * with the peaks of the queue and builder samples (stats-sampler.ts), and each project's totals.
 */
export function operatorStatsRoutes(deps: ApiDeps) {
  return async (app: FastifyInstance) => {
    app.addHook('onRequest', staticTokenAuthenticator(deps.config.operatorToken, 'KILN_OPERATOR_TOKEN'));
    app.get<{ Querystring: { hours: number } }>(
      '/v1/admin/stats',
      {
        schema: {
          summary:
            'Every project per minute over the last hours, with builds waiting and builder slots (peaks of samples), and each project’s totals (operator)',
          hide: true,
          querystring: hoursQuery,
          response: {
            200: minutesResponse(
              { waiting: sampled, running: sampled, slotsUsed: sampled, slotsCapacity: sampled },
              {
                projects: {
                  type: 'array',
                  items: {
                    type: 'object',
                    properties: {
                      id: { type: 'string' },
                      name: { type: ['string', 'null'] },
                      finished: minuteProperties.finished,
                      cacheHits: { type: 'integer' },
                      cacheMisses: { type: 'integer' },
                    },
                    required: ['id', 'name', 'finished', 'cacheHits', 'cacheMisses'],
                  },
                },
              },
            ),
            ...buildErrors,
          },
        },
      },
      async (req) => {
        const { minutes, projects } = await readOperatorStats(deps.redis, req.query.hours * 60);
        // Names of the projects that finished builds in the window (a few rows by primary key).
        const names = new Map(
          (
            await deps.db.project.findMany({
              where: { id: { in: projects.map((p) => p.projectId) } },
              select: { id: true, name: true },
            })
          ).map((p) => [p.id, p.name]),
        );
        return {
          minutes,
          projects: projects
            .map(({ projectId, ...totals }) => ({
              id: projectId,
              name: names.get(projectId) ?? null,
              ...totals,
            }))
            .sort((a, b) => (a.name ?? a.id).localeCompare(b.name ?? b.id)),
        };
      },
    );
  };
}
