/**
 * Which triggers a push delivery proves itself to. Anyone can send one, so the work is bounded
 * before it is done: at most `triggersPerRepository` rows are read (the cap trigger creation
 * enforces; rows beyond it, left from a higher cap, are the newest and are not consulted), only
 * the columns a build needs, and each distinct secret is checked once, however many triggers
 * share it. Between two checks the event loop is given back: an HMAC over 5 MiB takes
 * milliseconds, and other requests (/healthz included) go on meanwhile.
 */
import { randomBytes } from 'node:crypto';
import { setImmediate as nextTurn } from 'node:timers/promises';
import { AppError, type Prisma } from '@kiln/core';
import type { ApiDeps } from '../deps.js';
import type { Provider, PushDeliveryHeaders } from './providers.js';

const CANDIDATE_COLUMNS = {
  id: true,
  projectId: true,
  branch: true,
  spec: true,
  cloneUrl: true,
  secret: true,
} as const satisfies Prisma.TriggerSelect;

/** No trigger's secret: what a delivery for a repository without triggers is checked against. */
const NO_SECRET = randomBytes(32).toString('hex');

export type CandidateTrigger = Prisma.TriggerGetPayload<{ select: typeof CANDIDATE_COLUMNS }>;

/**
 * A verified delivery: its repository, the triggers whose secret verifies it, and `scope`, the
 * projects of those triggers. Several projects may have triggers on one repository, each with its
 * own secret: what one of them sends (its delivery ids, its rate) is counted in its scope only,
 * so it can neither use up another's allowance nor replay another's delivery id at it.
 */
export interface VerifiedDelivery {
  repository: string;
  triggers: CandidateTrigger[];
  scope: string;
}

/** The payload's repository and its triggers whose secret verifies the delivery (none → 401). */
export async function verifyPushDelivery(
  deps: ApiDeps,
  provider: Provider,
  headers: PushDeliveryHeaders,
  rawBody: Buffer,
  payload: Record<string, unknown>,
): Promise<VerifiedDelivery> {
  const repository = provider.repositoryOf(payload);
  const candidates = repository
    ? await deps.db.trigger.findMany({
        where: { provider: provider.name, repository },
        select: CANDIDATE_COLUMNS,
        orderBy: [{ createdAt: 'asc' }, { id: 'asc' }],
        take: deps.config.webhooks.triggersPerRepository,
      })
    : [];
  const accepted = new Set<string>();
  // A repository without triggers costs one check too, so the answer's time does not tell an
  // outsider which repositories have triggers here. It still grows with the count of distinct
  // secrets: a tenant with a trigger of its own on a repository can tell whether others have one.
  const secrets = candidates.length > 0 ? new Set(candidates.map((t) => t.secret)) : [NO_SECRET];
  for (const secret of secrets) {
    if (provider.verify(secret, rawBody, headers.credential)) accepted.add(secret);
    await nextTurn();
  }
  const triggers = candidates.filter((t) => accepted.has(t.secret));
  if (!repository || triggers.length === 0) {
    // The same answer whether the repository has no trigger or the signature is wrong.
    throw new AppError(
      'invalid_signature',
      `no ${provider.name} trigger of this repository accepts the delivery's ${provider.name === 'github' ? 'signature' : 'token'}`,
    );
  }
  const scope = [...new Set(triggers.map((t) => t.projectId))].sort().join(',');
  return { repository, triggers, scope };
}
