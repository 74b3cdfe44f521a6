/**
 * One push delivery (an inbound GitHub/GitLab webhook), from verified bytes to queued builds.
 * Order matters:
 * 1. the payload names the repository; the triggers configured for it are the candidates, and
 *    only those whose secret verifies the push delivery count (none → 401, nothing recorded);
 * 2. a webhook receipt is recorded (unique provider + push delivery id) before any build is
 *    created, so a replay finds it and is ignored;
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
  type GitHostPolicy,
  isCommitId,
  Prisma,
  parseBuildSpec,
  parseGitUrl,
} from '@kiln/core';
import { createBuild } from '../create-build.js';
import type { ApiDeps } from '../deps.js';
import { branchMatches } from './branch-glob.js';
import type { Provider, Push, PushDeliveryHeaders } from './providers.js';

/** `pushDeliveryId` is the provider's id of the push delivery (or the one Kiln made up). */
export type PushReceipt =
  | { outcome: 'built'; pushDeliveryId: string; builds: Build[] }
  | { outcome: 'ignored'; pushDeliveryId?: string; reason: string };

type Trigger = Prisma.TriggerGetPayload<object>;

const BRANCH_PREFIX = 'refs/heads/';

export async function receivePush(
  deps: ApiDeps,
  provider: Provider,
  headers: PushDeliveryHeaders,
  rawBody: Buffer,
  payload: Record<string, unknown>,
): Promise<PushReceipt> {
  const triggers = await verifiedTriggers(deps, provider, headers, rawBody, payload);
  const plan = planBuilds(provider, headers.event, payload, triggers, deps.config.git);
  // Without a push delivery id (older GitLab) there is nothing to dedupe on; the receipt is kept
  // as a record.
  const pushDeliveryId = headers.pushDeliveryId ?? `unidentified:${randomUUID()}`;
  try {
    // HookDelivery rows are webhook receipts (inbound), not completion-event deliveries.
    await deps.db.hookDelivery.create({
      data: {
        provider: provider.name,
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
  try {
    for (const { trigger, spec, url, push } of plan.builds) {
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
    }
  } catch (err) {
    // Forget the receipt so that a redelivery is not taken for a replay and builds the rest.
    await deps.db.hookDelivery
      .deleteMany({ where: { provider: provider.name, deliveryId: pushDeliveryId } })
      .catch(() => {});
    throw err;
  }
  await deps.db.hookDelivery.update({
    where: { provider_deliveryId: { provider: provider.name, deliveryId: pushDeliveryId } },
    data: { buildIds: builds.map((b) => b.id) },
  });
  deps.logger.info(
    { provider: provider.name, pushDelivery: pushDeliveryId, builds: builds.map((b) => b.id) },
    'webhook push: builds queued',
  );
  return { outcome: 'built', pushDeliveryId, builds };
}

/** The triggers for the payload's repository whose secret verifies this push delivery (each one is checked). */
async function verifiedTriggers(
  deps: ApiDeps,
  provider: Provider,
  headers: PushDeliveryHeaders,
  rawBody: Buffer,
  payload: Record<string, unknown>,
): Promise<Trigger[]> {
  const repository = provider.repositoryOf(payload);
  const candidates = repository
    ? await deps.db.trigger.findMany({
        where: { provider: provider.name, repository },
        orderBy: { createdAt: 'asc' },
      })
    : [];
  const verified = candidates.filter((t) => provider.verify(t.secret, rawBody, headers.credential));
  if (verified.length === 0) {
    // The same answer whether the repository has no trigger or the signature is wrong.
    throw new AppError(
      'invalid_signature',
      `no ${provider.name} trigger of this repository accepts the delivery's ${provider.name === 'github' ? 'signature' : 'token'}`,
    );
  }
  return verified;
}

interface PlannedBuild {
  trigger: Trigger;
  spec: ReturnType<typeof parseBuildSpec>;
  url: string;
  push: Push;
}

/** Which triggers build this push; when none, why not. */
function planBuilds(
  provider: Provider,
  event: string,
  payload: Record<string, unknown>,
  triggers: Trigger[],
  gitHosts: GitHostPolicy,
): { builds: PlannedBuild[]; reason?: string } {
  if (!provider.isPush(event)) return { builds: [], reason: `event "${event.slice(0, 64)}" is not a push` };
  const push = provider.pushOf(payload);
  if (!push.ref.startsWith(BRANCH_PREFIX)) {
    return { builds: [], reason: `"${push.ref.slice(0, 200)}" is not a branch` };
  }
  if (push.commit === null) return { builds: [], reason: 'the push deleted the branch' };
  if (!isCommitId(push.commit)) {
    return { builds: [], reason: 'the payload has no valid commit id' };
  }
  const branch = push.ref.slice(BRANCH_PREFIX.length);
  const matching = triggers.filter((t) => branchMatches(t.branch, branch));
  if (matching.length === 0) {
    return { builds: [], reason: `branch "${branch.slice(0, 200)}" matches no trigger` };
  }
  const builds: PlannedBuild[] = [];
  const problems: string[] = [];
  for (const trigger of matching) {
    try {
      const url = parseGitUrl(trigger.cloneUrl ?? push.cloneUrl, 'clone URL');
      // The payload's URL is the sender's choice; a trigger's was checked when created, under
      // the policy of then.
      checkGitHost(url, gitHosts, 'clone URL');
      const spec = parseBuildSpec(trigger.spec as BuildSpecInput);
      builds.push({ trigger, spec, url, push });
    } catch (err) {
      problems.push(`trigger ${trigger.id}: ${(err as Error).message}`);
    }
  }
  return problems.length > 0 ? { builds, reason: problems.join('; ') } : { builds };
}
