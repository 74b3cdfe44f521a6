import type { ProjectQuotas } from './config.js';
import type { PrismaClient, Project } from './db/generated/client.js';

/** A project's own quota columns (null: the configured default). */
export type ProjectQuotaRow = Pick<
  Project,
  'maxQueuedBuilds' | 'maxRunningBuilds' | 'maxArtifactBytes' | 'maxLogBytes' | 'maxStoredBytes'
>;

/** The quotas in force for a project: its own values where the operator set them, else the defaults. */
export function effectiveQuotas(defaults: ProjectQuotas, row: ProjectQuotaRow | null): ProjectQuotas {
  const bytes = (own: bigint | null | undefined, fallback: number) =>
    own === null || own === undefined ? fallback : Number(own);
  return {
    queuedBuilds: row?.maxQueuedBuilds ?? defaults.queuedBuilds,
    runningBuilds: row?.maxRunningBuilds ?? defaults.runningBuilds,
    artifactBytes: bytes(row?.maxArtifactBytes, defaults.artifactBytes),
    logBytes: bytes(row?.maxLogBytes, defaults.logBytes),
    storedBytes: bytes(row?.maxStoredBytes, defaults.storedBytes),
  };
}

/**
 * The quotas in force for a project, read from its row (a missing project gets the defaults), and
 * the bytes of the objects it keeps stored now (Project.storedBytes).
 */
export async function loadProjectQuotas(
  prisma: PrismaClient,
  defaults: ProjectQuotas,
  projectId: string,
): Promise<{ quotas: ProjectQuotas; storedBytes: number }> {
  const row = await prisma.project.findUnique({
    where: { id: projectId },
    select: {
      maxQueuedBuilds: true,
      maxRunningBuilds: true,
      maxArtifactBytes: true,
      maxLogBytes: true,
      maxStoredBytes: true,
      storedBytes: true,
    },
  });
  return { quotas: effectiveQuotas(defaults, row), storedBytes: Number(row?.storedBytes ?? 0n) };
}

/**
 * The bytes one more object may take before the project passes its stored-bytes quota (null: no
 * quota). Below zero, nothing more fits.
 */
export function storedBytesLeft(quotas: ProjectQuotas, storedBytes: number): number | null {
  return quotas.storedBytes === 0 ? null : quotas.storedBytes - storedBytes;
}
