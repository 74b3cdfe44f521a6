export { holdCacheSource } from './artifact-lock.js';
export { CONTEXT_LOCK_CLASS, lockContextObject } from './context-lock.js';
export {
  type BuildCounterValues,
  buildCountersKey,
  type CounterEvent,
  countBuildEvent,
  readBuildCounters,
} from './counters.js';
export {
  type AttemptEndInput,
  BuildLifecycle,
  type EventEnqueuer,
  type FailureInput,
  type FinalResult,
  type LifecycleDeps,
} from './lifecycle.js';
export {
  type AttemptGuard,
  type BuildChange,
  BuildRepository,
  COLUMNS_SET_LATER,
  INSERT_COLUMNS,
  type ProjectAdmission,
  type QueuedBuildInput,
} from './repository.js';
export {
  ATTEMPT_OUTCOMES,
  type AttemptOutcome,
  BUILD_ERROR_CODES,
  type BuildErrorCode,
  fromStatuses,
  TRANSITIONS,
  type TransitionName,
} from './states.js';
