/**
 * The gauges an autoscaler reads (deploy/kubernetes/: KEDA): builds waiting and running, builder
 * slots used and free, builders by health. Each scrape reads what is kept as things happen: BullMQ's
 * job counts, the builders' lease ZSETs, health records and draining marks in Redis (one pipeline,
 * a few commands per builder), never the Build table. Unlabelled, so that a scaler can name one
 * series; builder addresses (pod IPs that come and go) are no labels.
 */
import {
  builderDrainingKey,
  builderHealthKey,
  builderLeaseKey,
  type PublishedBuilderHealth,
} from '@kiln/core';
import { Gauge, type Registry } from 'prom-client';
import { currentBuilders } from './builder-members.js';
import type { ApiDeps } from './deps.js';

/** BullMQ states of a build that waits for a worker or a builder slot (hand-backs and retries are delayed). */
const WAITING_STATES = ['waiting', 'prioritized', 'delayed', 'waiting-children'] as const;

export interface BuilderFigures {
  slotsUsed: number;
  slotsFree: number;
  healthy: number;
  unhealthy: number;
  unknown: number;
  draining: number;
}

export async function builderFigures(deps: ApiDeps): Promise<BuilderFigures> {
  const builders = await currentBuilders(deps);
  const pipeline = deps.redis.pipeline().time();
  for (const b of builders) {
    pipeline
      .get(builderHealthKey(b.address))
      .zrangebyscore(builderLeaseKey(b.address), '-inf', '+inf', 'WITHSCORES')
      .exists(builderDrainingKey(b.address));
  }
  const replies = (await pipeline.exec()) ?? [];
  const value = (i: number): unknown => {
    const [err, v] = replies[i] ?? [new Error('no reply'), null];
    if (err) throw err;
    return v;
  };
  const [seconds, micros] = value(0) as [string, string];
  const now = Number(seconds) * 1000 + Math.floor(Number(micros) / 1000);
  const f: BuilderFigures = { slotsUsed: 0, slotsFree: 0, healthy: 0, unhealthy: 0, unknown: 0, draining: 0 };
  builders.forEach((b, i) => {
    const health = healthOf(value(1 + 3 * i));
    const scores = (value(2 + 3 * i) as string[]).filter((_, j) => j % 2 === 1).map(Number);
    const load = scores.filter((expiry) => expiry > now).length;
    const draining = value(3 + 3 * i) === 1;
    f.slotsUsed += load;
    if (draining) f.draining++;
    if (health === undefined) f.unknown++;
    else if (health) f.healthy++;
    else f.unhealthy++;
    // Free slots are those a build could take now: healthy, not draining.
    if (health && !draining) f.slotsFree += Math.max(0, b.concurrency - load);
  });
  return f;
}

function healthOf(raw: unknown): boolean | undefined {
  if (typeof raw !== 'string') return undefined;
  try {
    const v = JSON.parse(raw) as PublishedBuilderHealth;
    return typeof v?.healthy === 'boolean' ? v.healthy : undefined;
  } catch {
    return undefined;
  }
}

/** Builds waiting for a worker or a builder slot, and builds a worker is running (BullMQ's counts). */
export async function queueFigures(deps: ApiDeps): Promise<{ waiting: number; running: number }> {
  const counts = await deps.queue.getJobCounts(...WAITING_STATES, 'active');
  const waiting = WAITING_STATES.reduce((sum, state) => sum + (counts[state] ?? 0), 0);
  return { waiting, running: counts.active ?? 0 };
}

export function registerBuilderMetrics(registry: Registry, deps: ApiDeps): void {
  // One read per scrape, shared by the gauges below.
  let reading: Promise<BuilderFigures> | undefined;
  const figures = () => {
    reading ??= builderFigures(deps).finally(() => {
      setImmediate(() => {
        reading = undefined;
      });
    });
    return reading;
  };
  const gauge = (name: string, help: string, pick: (f: BuilderFigures) => number) =>
    new Gauge({
      name,
      help,
      registers: [registry],
      async collect() {
        this.set(pick(await figures()));
      },
    });
  new Gauge({
    name: 'kiln_builds_waiting',
    help: `Builds waiting for a worker or a builder slot: jobs of ${deps.queue.name} in ${WAITING_STATES.join(', ')}`,
    registers: [registry],
    async collect() {
      this.set((await queueFigures(deps)).waiting);
    },
  });
  new Gauge({
    name: 'kiln_builds_running',
    help: `Builds a worker is running: active jobs of ${deps.queue.name}`,
    registers: [registry],
    async collect() {
      this.set((await queueFigures(deps)).running);
    },
  });
  gauge(
    'kiln_builder_slots_used',
    'Builder slots held by builds (live leases), on every builder',
    (f) => f.slotsUsed,
  );
  gauge(
    'kiln_builder_slots_free',
    'Builder slots a build could take now: concurrency minus leases, on healthy builders not draining',
    (f) => f.slotsFree,
  );
  gauge(
    'kiln_builders_healthy',
    'Builders whose last health check (by any worker) answered',
    (f) => f.healthy,
  );
  gauge('kiln_builders_unhealthy', 'Builders whose last health check failed', (f) => f.unhealthy);
  gauge('kiln_builders_unknown', 'Builders no worker has checked lately', (f) => f.unknown);
  gauge('kiln_builders_draining', 'Builders marked draining (their pods are stopping)', (f) => f.draining);
}
