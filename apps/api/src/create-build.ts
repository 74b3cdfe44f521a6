import { createHash } from 'node:crypto';
import { AppError, type Build, type BuildSpec, buildJobOptions, Prisma, QUEUE_BUILDS } from '@kiln/core';
import type { ApiDeps } from './deps.js';
import type { StoredContext } from './upload.js';

const MAX_IDEMPOTENCY_KEY = 255;

export function checkIdempotencyKey(key: string | undefined): string | undefined {
  if (key === undefined || key === '') return undefined;
  if (key.length > MAX_IDEMPOTENCY_KEY || !/^[\x21-\x7e]+$/.test(key)) {
    throw new AppError(
      'invalid_request',
      `Idempotency-Key must be 1-${MAX_IDEMPOTENCY_KEY} printable ASCII characters`,
    );
  }
  return key;
}

/**
 * Records the build (queued) and enqueues its job. With an Idempotency-Key, a retried request
 * gets the build the first one made; the same key with another body is a conflict. If Redis
 * is down the row stays queued and the worker's reconciler enqueues it later: an accepted
 * build is never lost.
 */
export async function createBuild(
  deps: ApiDeps,
  projectId: string,
  spec: BuildSpec,
  context: StoredContext,
  idempotencyKey: string | undefined,
): Promise<{ build: Build; created: boolean }> {
  const requestHash = createHash('sha256')
    .update(JSON.stringify({ spec, context: context.digest }))
    .digest('hex');
  if (idempotencyKey) {
    const existing = await deps.db.build.findUnique({
      where: { projectId_idempotencyKey: { projectId, idempotencyKey } },
    });
    if (existing) return { build: sameRequest(existing, requestHash), created: false };
  }
  let build: Build;
  try {
    build = await deps.db.build.create({
      data: {
        projectId,
        status: 'queued',
        spec: spec as unknown as Prisma.InputJsonValue,
        contextDigest: context.digest,
        contextSize: BigInt(context.size),
        contextKey: context.key,
        idempotencyKey: idempotencyKey ?? null,
        requestHash,
      },
    });
  } catch (err) {
    // Two concurrent requests with one key: the loser answers with the winner's build.
    if (idempotencyKey && err instanceof Prisma.PrismaClientKnownRequestError && err.code === 'P2002') {
      const winner = await deps.db.build.findUniqueOrThrow({
        where: { projectId_idempotencyKey: { projectId, idempotencyKey } },
      });
      return { build: sameRequest(winner, requestHash), created: false };
    }
    throw err;
  }
  try {
    await deps.queue.add(
      QUEUE_BUILDS,
      { buildId: build.id },
      buildJobOptions(build.id, deps.config.buildAttempts),
    );
  } catch (err) {
    deps.logger.warn({ err, buildId: build.id }, 'enqueue failed; the reconciler will enqueue the build');
  }
  return { build, created: true };
}

function sameRequest(build: Build, requestHash: string): Build {
  if (build.requestHash !== requestHash) {
    throw new AppError('conflict', 'this Idempotency-Key was already used with a different request');
  }
  return build;
}
