import type { ProjectQuotas } from './config.js';
import type { PrismaClient, Project } from './db/generated/client.js';

/** A project's own quota columns (null: the configured default). */
export type ProjectQuotaRow = Pick<Project, 'maxQueuedBuilds' | 'maxRunningBuilds' | 'maxArtifactBytes'>;

/** The quotas in force for a project: its own values where the operator set them, else the defaults. */
export function effectiveQuotas(defaults: ProjectQuotas, row: ProjectQuotaRow | null): ProjectQuotas {
  return {
    queuedBuilds: row?.maxQueuedBuilds ?? defaults.queuedBuilds,
    runningBuilds: row?.maxRunningBuilds ?? defaults.runningBuilds,
    artifactBytes:
      row?.maxArtifactBytes === null || row?.maxArtifactBytes === undefined
        ? defaults.artifactBytes
        : Number(row.maxArtifactBytes),
  };
}

/** The quotas in force for a project, read from its row (a missing project gets the defaults). */
export async function loadProjectQuotas(
  prisma: PrismaClient,
  defaults: ProjectQuotas,
  projectId: string,
): Promise<ProjectQuotas> {
  const row = await prisma.project.findUnique({
    where: { id: projectId },
    select: { maxQueuedBuilds: true, maxRunningBuilds: true, maxArtifactBytes: true },
  });
  return effectiveQuotas(defaults, row);
}
