import { BUILD_STATUSES, QUEUE_BUILDS } from '@kiln/core';
import type { FastifyInstance } from 'fastify';
import { Gauge, Histogram, Registry } from 'prom-client';
import { staticTokenAuthenticator } from '../auth.js';
import type { ApiDeps } from '../deps.js';

export interface ApiMetrics {
  registry: Registry;
  uploadSeconds: Histogram;
}

/** Builds by state and queue depth are read at scrape time; upload figures are counted as they happen. */
export function createMetrics(deps: ApiDeps): ApiMetrics {
  const registry = new Registry();
  new Gauge({
    name: 'kiln_builds',
    help: 'Builds by status',
    labelNames: ['status'],
    registers: [registry],
    async collect() {
      const counts = await deps.builds.countByStatus();
      for (const s of BUILD_STATUSES) this.set({ status: s }, counts.get(s) ?? 0);
    },
  });
  new Gauge({
    name: 'kiln_queue_jobs',
    help: `Jobs in the ${QUEUE_BUILDS} queue by state`,
    labelNames: ['state'],
    registers: [registry],
    async collect() {
      // Every job has a priority (fair scheduling), so waiting ones are `prioritized`.
      const counts = await deps.queue.getJobCounts('waiting', 'prioritized', 'active', 'delayed', 'failed');
      for (const [state, n] of Object.entries(counts)) this.set({ state }, n);
    },
  });
  new Gauge({
    name: 'kiln_build_duration_seconds_last',
    help: 'Duration of the most recently finished build',
    registers: [registry],
    async collect() {
      const seconds = await deps.builds.lastBuildSeconds();
      if (seconds !== undefined) this.set(seconds);
    },
  });
  new Gauge({
    name: 'kiln_bytes',
    help: 'Bytes of contexts received and artifacts produced, over all builds on record',
    labelNames: ['kind'],
    registers: [registry],
    async collect() {
      const totals = await deps.builds.byteTotals();
      this.set({ kind: 'context' }, totals.context);
      this.set({ kind: 'artifact' }, totals.artifact);
    },
  });
  return {
    registry,
    uploadSeconds: new Histogram({
      name: 'kiln_context_upload_seconds',
      help: 'Time to receive, validate and store a context',
      buckets: [0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60],
      registers: [registry],
    }),
  };
}

export function opsRoutes(deps: ApiDeps, metrics: ApiMetrics) {
  return async (app: FastifyInstance) => {
    app.get('/healthz', { schema: { summary: 'The process is up' } }, async () => ({ status: 'ok' }));

    app.get('/readyz', { schema: { summary: 'Database, Redis and storage answer' } }, async (_req, reply) => {
      const check = async (name: string, fn: () => Promise<unknown>) => {
        const timeout = new Promise((_, reject) =>
          setTimeout(() => reject(new Error('timed out')), 2000).unref(),
        );
        try {
          await Promise.race([fn(), timeout]);
          return [name, 'ok'] as const;
        } catch (err) {
          return [name, `failing: ${(err as Error).message.split('\n')[0]}`] as const;
        }
      };
      const checks = Object.fromEntries(
        await Promise.all([
          check('database', () => deps.db.$queryRaw`SELECT 1`),
          check('redis', () => deps.redis.ping()),
          check('storage', () => deps.storage.check()),
        ]),
      );
      const ok = Object.values(checks).every((v) => v === 'ok');
      return reply.code(ok ? 200 : 503).send({ status: ok ? 'ready' : 'unavailable', checks });
    });

    app.get(
      '/metrics',
      {
        schema: { hide: true },
        onRequest: staticTokenAuthenticator(deps.config.metricsToken, 'KILN_METRICS_TOKEN'),
      },
      async (_req, reply) => {
        reply.type(metrics.registry.contentType);
        return metrics.registry.metrics();
      },
    );
  };
}
