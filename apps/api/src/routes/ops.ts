import { BUILD_HISTOGRAMS, type BuildCounterValues, QUEUE_BUILDS, readBuildCounters } from '@kiln/core';
import type { FastifyInstance } from 'fastify';
import { Counter, Gauge, Histogram, Registry } from 'prom-client';
import { staticTokenAuthenticator } from '../auth.js';
import { registerBuilderMetrics } from '../builder-metrics.js';
import type { ApiDeps } from '../deps.js';
import { registerRedisHistograms } from '../metrics/redis-histograms.js';

const FINAL_BUILD_STATUSES = ['succeeded', 'failed', 'canceled'] as const;

export interface ApiMetrics {
  registry: Registry;
  uploadSeconds: Histogram;
}

/**
 * Every figure comes from counters kept as things happen (the build counters and histograms in
 * Redis, BullMQ's job counts, this process's upload and request histograms): a scrape never
 * aggregates the Build table.
 */
export function createMetrics(deps: ApiDeps): ApiMetrics {
  const registry = new Registry();
  // One read of the counters per scrape, shared by the metrics below.
  let reading: Promise<BuildCounterValues> | undefined;
  const counters = () => {
    reading ??= readBuildCounters(deps.redis).finally(() => {
      setImmediate(() => {
        reading = undefined;
      });
    });
    return reading;
  };
  // Counters whose value lives in Redis: each scrape sets them to what Redis holds.
  new Counter({
    name: 'kiln_builds_total',
    help: 'Builds by what happened to them: queued, answered from the result cache, started (attempts), finished by status',
    labelNames: ['event', 'status'],
    registers: [registry],
    async collect() {
      const c = await counters();
      this.reset();
      this.inc({ event: 'queued', status: 'queued' }, c.queued);
      this.inc({ event: 'cached', status: 'succeeded' }, c.cached);
      this.inc({ event: 'started', status: 'running' }, c.started);
      for (const s of FINAL_BUILD_STATUSES) this.inc({ event: 'finished', status: s }, c.finished[s] ?? 0);
    },
  });
  // One read of BullMQ's counts per scrape too.
  let counting: Promise<Record<string, number>> | undefined;
  const jobCounts = () => {
    // Every job has a priority (fair scheduling), so waiting ones are `prioritized`.
    counting ??= deps.queue
      .getJobCounts('waiting', 'prioritized', 'active', 'delayed', 'failed')
      .finally(() => {
        setImmediate(() => {
          counting = undefined;
        });
      });
    return counting;
  };
  new Gauge({
    name: 'kiln_queue_jobs',
    help: `Jobs in the ${QUEUE_BUILDS} queue by state`,
    labelNames: ['state'],
    registers: [registry],
    async collect() {
      for (const [state, n] of Object.entries(await jobCounts())) this.set({ state }, n);
    },
  });
  // Counters of one label whose values live in Redis.
  const redisCounter = (
    name: string,
    help: string,
    label: string,
    values: (c: BuildCounterValues) => Record<string, number>,
  ) =>
    new Counter({
      name,
      help,
      labelNames: [label],
      registers: [registry],
      async collect() {
        const byLabel = values(await counters());
        this.reset();
        for (const [value, n] of Object.entries(byLabel)) this.inc({ [label]: value }, n);
      },
    });
  redisCounter(
    'kiln_buildkit_vertices_total',
    "Steps (vertices) of solves as BuildKit's status stream ended them, by whether BuildKit's cache had them",
    'cached',
    ({ vertices }) => ({ true: vertices.cached, false: vertices.all - vertices.cached }),
  );
  redisCounter(
    'kiln_result_cache_lookups_total',
    'Result-cache look-ups of new builds the cache could answer, by result',
    'result',
    ({ resultCache }) => resultCache,
  );
  redisCounter(
    'kiln_event_deliveries_total',
    'Completion-event delivery attempts by what became of the delivery: delivered, retrying, failed (gave up)',
    'status',
    ({ deliveries }) => ({
      delivered: deliveries.delivered ?? 0,
      retrying: deliveries.retrying ?? 0,
      failed: deliveries.failed ?? 0,
    }),
  );
  registerRedisHistograms(registry, deps, Object.values(BUILD_HISTOGRAMS));
  new Gauge({
    name: 'kiln_build_duration_seconds_last',
    help: 'Duration of the most recently finished build',
    registers: [registry],
    async collect() {
      const { lastSeconds } = await counters();
      if (lastSeconds !== undefined) this.set(lastSeconds);
    },
  });
  new Counter({
    name: 'kiln_bytes_total',
    help: 'Bytes of contexts of queued builds and of artifacts produced (a result-cache answer produces none)',
    labelNames: ['kind'],
    registers: [registry],
    async collect() {
      const c = await counters();
      this.reset();
      this.inc({ kind: 'context' }, c.contextBytes);
      this.inc({ kind: 'artifact' }, c.artifactBytes);
    },
  });
  registerBuilderMetrics(registry, deps);
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
