import { type HistogramSeries, type HistogramSpec, OTHER_PROJECTS, readHistograms } from '@kiln/core';
import type { Metric, Registry } from 'prom-client';
import type { ApiDeps } from '../deps.js';

/**
 * Serves histograms the worker keeps in Redis (@kiln/core's metrics/histograms.ts). prom-client's
 * Histogram can only observe values, not take counts, so each is a metric object of its own whose
 * get() reads the buckets; one HGETALL per scrape serves all of them. The `project` label holds a
 * project id in Redis and the project's name here (at most KILN_METRICS_MAX_PROJECTS look-ups by
 * primary key per scrape).
 */
export function registerRedisHistograms(
  registry: Registry,
  deps: ApiDeps,
  specs: readonly HistogramSpec[],
): void {
  let reading: Promise<Map<string, HistogramSeries[]>> | undefined;
  const read = () => {
    reading ??= readNamed(deps, specs).finally(() => {
      setImmediate(() => {
        reading = undefined;
      });
    });
    return reading;
  };
  for (const spec of specs) {
    const metric = {
      name: spec.name,
      help: spec.help,
      type: 'histogram',
      aggregator: 'sum',
      labelNames: spec.labelNames,
      reset() {},
      async get() {
        const series = (await read()).get(spec.name) ?? [];
        return {
          name: spec.name,
          help: spec.help,
          type: 'histogram',
          aggregator: 'sum',
          values: valuesOf(spec, series),
        };
      },
    };
    registry.registerMetric(metric as unknown as Metric);
  }
}

function valuesOf(spec: HistogramSpec, series: readonly HistogramSeries[]) {
  return series.flatMap(({ labels, cumulative, sum, count }) => [
    ...cumulative.map((value, i) => ({
      metricName: `${spec.name}_bucket`,
      labels: { ...labels, le: i < spec.buckets.length ? String(spec.buckets[i]) : '+Inf' },
      value,
    })),
    { metricName: `${spec.name}_sum`, labels, value: sum },
    { metricName: `${spec.name}_count`, labels, value: count },
  ]);
}

async function readNamed(deps: ApiDeps, specs: readonly HistogramSpec[]) {
  const byName = await readHistograms(deps.redis, specs);
  const ids = new Set<string>();
  for (const series of byName.values())
    for (const s of series) if (s.labels.project) ids.add(s.labels.project);
  ids.delete(OTHER_PROJECTS);
  if (ids.size === 0) return byName;
  const rows = await deps.db.project.findMany({
    where: { id: { in: [...ids] } },
    select: { id: true, name: true },
  });
  const names = new Map(rows.map((r) => [r.id, r.name]));
  for (const series of byName.values()) {
    for (const s of series) {
      const project = s.labels.project;
      // A deleted project keeps its id: its series stay, under a label no live project has.
      if (project && names.has(project)) s.labels.project = names.get(project) as string;
    }
  }
  return byName;
}
