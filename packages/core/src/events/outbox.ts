/**
 * The transactional outbox of completion events: the code that makes a build final calls
 * recordBuildEvents in the same transaction, so an event exists exactly when the final state
 * does (a rolled-back write leaves none, a committed one cannot lose it). The rows are then
 * delivered by the worker's event dispatcher, out of band: delivery never holds up a build.
 */
import type { Build, Prisma } from '../db/generated/client.js';

export const BUILD_EVENT_TYPES = ['build.succeeded', 'build.failed', 'build.canceled'] as const;
export type BuildEventType = (typeof BUILD_EVENT_TYPES)[number];

/** `expired` is retention deleting an artifact, not an outcome of the build: no event. */
const EVENT_OF_STATUS: Partial<Record<Build['status'], BuildEventType>> = {
  succeeded: 'build.succeeded',
  failed: 'build.failed',
  canceled: 'build.canceled',
};

/** `data` of a build event: the build as it ended. */
export interface BuildEventData {
  id: string;
  projectId: string;
  status: string;
  /** api | github | gitlab */
  source: string;
  /** Answered from the result cache; `cachedFrom` is the build that ran. */
  cached: boolean;
  cachedFrom: string | null;
  attempts: number;
  artifact: { filename: string; size: number; digest: string | null } | null;
  error: { code: string; message: string } | null;
  createdAt: string;
  startedAt: string | null;
  finishedAt: string | null;
}

/** What a receiver gets: the body of the POST. */
export interface BuildEvent {
  /** The delivery id: the same on every retry of one delivery, so receivers can deduplicate. */
  id: string;
  type: BuildEventType;
  createdAt: string;
  data: BuildEventData;
}

export function buildEventData(build: Build): BuildEventData {
  const dest = (build.spec as { output?: { dest?: unknown } } | null)?.output?.dest;
  return {
    id: build.id,
    projectId: build.projectId,
    status: build.status,
    source: build.source,
    cached: build.cachedFromId !== null,
    cachedFrom: build.cachedFromId,
    attempts: build.attempts,
    artifact:
      build.status === 'succeeded' && build.artifactKey
        ? {
            filename: typeof dest === 'string' ? dest : 'output.tar',
            size: Number(build.artifactSize ?? 0),
            digest: build.artifactDigest,
          }
        : null,
    error: build.errorCode ? { code: build.errorCode, message: build.errorMessage ?? '' } : null,
    createdAt: build.createdAt.toISOString(),
    startedAt: build.startedAt?.toISOString() ?? null,
    finishedAt: build.finishedAt?.toISOString() ?? null,
  };
}

/**
 * Inserts one pending delivery per active endpoint of the build's project for its final state,
 * inside `tx` (the transaction that wrote that state; `build` is the row as it wrote it), and
 * returns the ids of the new ones for the caller to enqueue once committed. UNIQUE(endpoint,
 * build, event) with skipDuplicates makes a repeated call (a retried write) add nothing. A build
 * that is not final gets no event. Called by BuildLifecycle only.
 */
export async function recordBuildEvents(tx: Prisma.TransactionClient, build: Build): Promise<string[]> {
  const event = EVENT_OF_STATUS[build.status];
  if (!event) return [];
  const endpoints = await tx.eventEndpoint.findMany({
    where: { projectId: build.projectId, disabledAt: null },
    select: { id: true },
  });
  if (endpoints.length === 0) return [];
  const payload = buildEventData(build) as unknown as Prisma.InputJsonValue;
  const created = await tx.eventDelivery.createManyAndReturn({
    data: endpoints.map((e) => ({ endpointId: e.id, buildId: build.id, event, payload })),
    skipDuplicates: true,
    select: { id: true },
  });
  return created.map((d) => d.id);
}

/** The exact bytes POSTed for a delivery: the same on every attempt (only the signature's time changes). */
export function eventBody(delivery: {
  id: string;
  event: string;
  createdAt: Date;
  payload: Prisma.JsonValue;
}): string {
  return JSON.stringify({
    id: delivery.id,
    type: delivery.event,
    createdAt: delivery.createdAt.toISOString(),
    data: delivery.payload,
  });
}
