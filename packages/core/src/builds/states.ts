/**
 * The build state machine as data: which transition may move a build from which status, and the
 * typed codes a failed build or a finished attempt carries. BuildLifecycle (lifecycle.ts) is the
 * only code that applies these; docs/architecture.md draws them.
 */
import type { BuildStatusName } from '../builds.js';

/** Every way a build changes status. `queue` and `answerFromCache` create the row. */
export const TRANSITIONS = {
  queue: { from: [], to: ['queued'] },
  answerFromCache: { from: [], to: ['succeeded'] },
  // From `running` too: a worker taking over an attempt whose worker vanished (its lease died).
  start: { from: ['queued', 'running'], to: ['running'] },
  // The final ones accept `queued`: a build can fail or be canceled before it starts, and an
  // attempt the reconciler judged lost (row back to queued) may still end on its own.
  succeed: { from: ['queued', 'running'], to: ['succeeded'] },
  fail: { from: ['queued', 'running'], to: ['failed'] },
  cancel: { from: ['queued', 'running'], to: ['canceled'] },
  requeue: { from: ['running'], to: ['queued'] },
  // The reconciler: the worker of a running build vanished; back to the queue, or failed once its
  // attempts are used up.
  lose: { from: ['running'], to: ['queued', 'failed'] },
  expire: { from: ['succeeded', 'failed', 'canceled'], to: ['expired'] },
} as const satisfies Record<string, { from: readonly BuildStatusName[]; to: readonly BuildStatusName[] }>;

export type TransitionName = keyof typeof TRANSITIONS;

/** Statuses a transition may start from, as a mutable array for SQL/Prisma `IN` filters. */
export function fromStatuses(name: TransitionName): BuildStatusName[] {
  return [...TRANSITIONS[name].from];
}

/** Why a build ended `failed` (or `canceled`): `errorCode` of the row and of its attempts. */
export const BUILD_ERROR_CODES = [
  /** The stored spec is unusable (a row written by hand or by an older API). */
  'invalid_spec',
  'invalid_context',
  /** The stored context is over the worker's KILN_MAX_CONTEXT_* (reused by digest after they were lowered). */
  'context_too_large',
  /** An output type the worker cannot export. */
  'unsupported_output',
  /** The Dockerfile, a RUN step, a target: the user's build itself failed. Not retried. */
  'build_failed',
  /** The artifact grew past the project's artifact-bytes quota; nothing of it was stored. */
  'output_too_large',
  /** KILN_BUILD_TIMEOUT_SECONDS passed. */
  'timeout',
  /** The stored context object is gone. */
  'context_missing',
  /** Redis lost the secret values (or they outlived their TTL). */
  'secrets_unavailable',
  /** Builder, storage or network trouble; retried while attempts remain. */
  'infrastructure',
  /** Every builder unhealthy (not: every builder busy, which only delays). */
  'no_builder_available',
  /** No configured builder can do what the spec asks (platform, feature); not retried. */
  'no_capable_builder',
  'canceled',
  /** An attempt whose worker vanished (its builder lease expired, or BullMQ found it stalled). */
  'worker_lost',
  /** An attempt handed back by a worker that was shutting down. */
  'worker_stopped',
] as const;
export type BuildErrorCode = (typeof BUILD_ERROR_CODES)[number];

/** How one attempt ended: `lost` only when its worker vanished or stopped, `failed` when it ran and failed. */
export const ATTEMPT_OUTCOMES = ['succeeded', 'failed', 'canceled', 'lost'] as const;
export type AttemptOutcome = (typeof ATTEMPT_OUTCOMES)[number];
