/**
 * One push delivery (an inbound GitHub/GitLab webhook), from verified bytes to queued builds.
 * Order matters:
 * 1. the triggers whose secret verifies the push delivery (verify-delivery.ts, none → 401,
 *    nothing recorded) are the candidates;
 * 2. a webhook receipt is recorded (unique provider + scope + push delivery id) before any build
 *    is created, so a replay finds it and is ignored; per scope (the projects whose triggers
 *    verified it), so a delivery id one project's sender used does not silence another's;
 * 3. a push to a branch that a trigger's glob matches creates one build per such trigger through
 *    the API's own createBuild, pinned to the pushed commit. Nothing is fetched here: BuildKit
 *    fetches the repository when the build runs, so the answer comes in milliseconds.
 */
import { randomUUID } from 'node:crypto';
import {
  AppError,
  type Build,
  type BuildSpecInput,
  checkGitHost,
  hostMatches,
  httpStatusFor,
  isAppError,
  isCommitId,
  type KilnConfig,
  Prisma,
  parseBuildSpec,
  parseGitUrl,
} from '@kiln/core';
import { createBuild } from '../create-build.js';
import type { ApiDeps } from '../deps.js';
import { branchMatches } from './branch-glob.js';
import type { Provider, Push, PushDeliveryHeaders } from './providers.js';
import type { CandidateTrigger, VerifiedDelivery } from './verify-delivery.js';

/** `pushDeliveryId` is the provider's id of the push delivery (or the one Kiln made up). */
export type PushReceipt =
  | { outcome: 'built'; pushDeliveryId: string; builds: Build[]; refused: RefusedTrigger[] }
  | { outcome: 'ignored'; pushDeliveryId?: string; reason: string };

/** A trigger whose project refused the build (its quota, no builder for its spec, ...). */
export interface RefusedTrigger {
  triggerId: string;
  error: AppError;
}

const BRANCH_PREFIX = 'refs/heads/';
/**
 * Longest ref considered (bytes): git keeps refs as files, and a path component (the branch's
 * last segment) cannot exceed 255 bytes on common filesystems. Longer ones are ignored before
 * any matching.
 */
const MAX_REF_BYTES = 255;

export async function receivePush(
  deps: ApiDeps,
  provider: Provider,
  headers: PushDeliveryHeaders,
  payload: Record<string, unknown>,
  { triggers, scope, repository }: VerifiedDelivery,
): Promise<PushReceipt> {
  const plan = planBuilds(provider, headers.event, payload, { triggers, repository }, deps.config);
  // Without a push delivery id (older GitLab) there is nothing to dedupe on; the receipt is kept
  // as a record (unless it is forgotten for a redelivery, below).
  const pushDeliveryId = headers.pushDeliveryId ?? `unidentified:${randomUUID()}`;
  try {
    // HookDelivery rows are webhook receipts (inbound), not completion-event deliveries.
    await deps.db.hookDelivery.create({
      data: {
        provider: provider.name,
        scope,
        deliveryId: pushDeliveryId,
        outcome: plan.builds.length > 0 ? 'built' : 'ignored',
        detail: plan.reason ?? null,
      },
    });
  } catch (err) {
    if (err instanceof Prisma.PrismaClientKnownRequestError && err.code === 'P2002') {
      return { outcome: 'ignored', pushDeliveryId, reason: 'duplicate delivery' };
    }
    throw err;
  }
  if (plan.builds.length === 0) {
    return { outcome: 'ignored', pushDeliveryId, reason: plan.reason ?? 'nothing to build' };
  }
  const builds: Build[] = [];
  const refused: RefusedTrigger[] = [];
  // Forgotten, a redelivery is not taken for a replay: it builds what is missing, and finds the
  // builds made (by their idempotency keys).
  const forgetReceipt = () =>
    deps.db.hookDelivery
      .deleteMany({ where: { provider: provider.name, scope, deliveryId: pushDeliveryId } })
      .catch(() => {});
  try {
    for (const { trigger, spec, url, push } of plan.builds) {
      try {
        const { build } = await createBuild(
          deps,
          trigger.projectId,
          spec,
          {
            kind: 'git',
            git: { url, ref: push.ref },
            commit: push.commit as string,
            origin: provider.name,
            triggerId: trigger.id,
          },
          // Per push delivery and trigger: a redelivery after a failure part-way finds the builds made.
          headers.pushDeliveryId ? `${provider.name}:${headers.pushDeliveryId}:${trigger.id}` : undefined,
        );
        builds.push(build);
      } catch (err) {
        // One project's refusal (its quota, no builder for its spec) is its own: the other
        // triggers still build. The service's own failures end the delivery (5xx: redelivered).
        if (!isAppError(err) || httpStatusFor(err.code) >= 500) throw err;
        refused.push({ triggerId: trigger.id, error: err });
      }
    }
  } catch (err) {
    await forgetReceipt();
    throw err;
  }
  if (refused.length > 0) {
    await forgetReceipt();
    // Every trigger refused: the delivery fails as the first did, for its sender to see.
    if (builds.length === 0) throw refused[0]?.error;
    deps.logger.info(
      { provider: provider.name, pushDelivery: pushDeliveryId, refused: refused.map((r) => r.triggerId) },
      'webhook push: some triggers refused the build',
    );
    return { outcome: 'built', pushDeliveryId, builds, refused };
  }
  await deps.db.hookDelivery.update({
    where: { provider_scope_deliveryId: { provider: provider.name, scope, deliveryId: pushDeliveryId } },
    data: { buildIds: builds.map((b) => b.id) },
  });
  deps.logger.info(
    { provider: provider.name, pushDelivery: pushDeliveryId, builds: builds.map((b) => b.id) },
    'webhook push: builds queued',
  );
  return { outcome: 'built', pushDeliveryId, builds, refused };
}

interface PlannedBuild {
  trigger: CandidateTrigger;
  spec: ReturnType<typeof parseBuildSpec>;
  url: string;
  push: Push;
}

/**
 * The payload's clone URL, only on a host of KILN_WEBHOOK_CLONE_HOSTS and when its path names the
 * repository the delivery was verified for: whoever holds a trigger's secret could otherwise have
 * the project build any repository (and push it with the project's registry logins), from
 * anywhere. As parsed (dot segments resolved), so that what is fetched is what was checked.
 * Elsewhere (a self-hosted GitLab or GitHub Enterprise) the trigger names its cloneUrl.
 */
function payloadCloneUrl(
  value: string | undefined,
  repository: string,
  cloneHosts: readonly string[],
): string {
  const url = new URL(parseGitUrl(value, 'clone URL'));
  if (!hostMatches(url.hostname, cloneHosts)) {
    throw new AppError(
      'invalid_request',
      `the payload's clone URL is on ${url.host}, not a host whose payloads name clone URLs (KILN_WEBHOOK_CLONE_HOSTS): give the trigger a cloneUrl`,
    );
  }
  const path = url.pathname
    .replace(/^\/+/, '')
    .replace(/\.git$/i, '')
    .toLowerCase();
  if (path !== repository) {
    throw new AppError(
      'invalid_request',
      `the payload's clone URL ${url.href} is not one of the repository ${repository}`,
    );
  }
  return url.href;
}

/** Which triggers build this push; when none, why not. */
function planBuilds(
  provider: Provider,
  event: string,
  payload: Record<string, unknown>,
  { triggers, repository }: Pick<VerifiedDelivery, 'triggers' | 'repository'>,
  config: Pick<KilnConfig, 'webhooks' | 'git'>,
): { builds: PlannedBuild[]; reason?: string } {
  const { maxAgeSeconds, cloneHosts } = config.webhooks;
  if (!provider.isPush(event)) return { builds: [], reason: `event "${event.slice(0, 64)}" is not a push` };
  const push = provider.pushOf(payload);
  if (Buffer.byteLength(push.ref) > MAX_REF_BYTES) {
    return { builds: [], reason: `the ref is longer than ${MAX_REF_BYTES} bytes` };
  }
  // A signed payload stays valid forever and the delivery id is not signed: without this, a
  // captured push replayed under a fresh id would rebuild its (old) commit.
  const age = push.pushedAt === undefined ? 0 : Date.now() / 1000 - push.pushedAt;
  if (maxAgeSeconds > 0 && age > maxAgeSeconds) {
    return { builds: [], reason: `the push is ${Math.round(age)} s old (more than ${maxAgeSeconds} s)` };
  }
  if (!push.ref.startsWith(BRANCH_PREFIX)) {
    return { builds: [], reason: `"${push.ref.slice(0, 200)}" is not a branch` };
  }
  if (push.commit === null) return { builds: [], reason: 'the push deleted the branch' };
  if (!isCommitId(push.commit)) {
    return { builds: [], reason: 'the payload has no valid commit id' };
  }
  const branch = push.ref.slice(BRANCH_PREFIX.length);
  // git forbids it in a ref; the stored ref's `:` would start a subdirectory (gitSubdirOf).
  if (branch.includes(':')) return { builds: [], reason: 'the branch name has a ":", which git forbids' };
  const matching = triggers.filter((t) => branchMatches(t.branch, branch));
  if (matching.length === 0) {
    return { builds: [], reason: `branch "${branch.slice(0, 200)}" matches no trigger` };
  }
  const builds: PlannedBuild[] = [];
  const problems: string[] = [];
  for (const trigger of matching) {
    try {
      const url = trigger.cloneUrl
        ? parseGitUrl(trigger.cloneUrl, 'clone URL')
        : payloadCloneUrl(push.cloneUrl, repository, cloneHosts);
      // The payload's URL is the sender's choice; a trigger's was checked when created, under
      // the policy of then.
      checkGitHost(url, config.git, 'clone URL');
      const spec = parseBuildSpec(trigger.spec as BuildSpecInput);
      builds.push({ trigger, spec, url, push });
    } catch (err) {
      problems.push(`trigger ${trigger.id}: ${(err as Error).message}`);
    }
  }
  return problems.length > 0 ? { builds, reason: problems.join('; ') } : { builds };
}
