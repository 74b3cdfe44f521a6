export { type AbortKind, ActiveBuilds, BuildAbort } from './active-builds.js';
export { BuildLog } from './build-log.js';
export { defaultPlatformOf } from './builders/health.js';
export { Lease } from './builders/lease.js';
export {
  BuilderPool,
  type BuilderPoolOptions,
  type BuilderStatus,
  NoBuilderAvailableError,
} from './builders/pool.js';
export { CancelListener, parseCancelMessage } from './cancel.js';
export { EventDispatcher, type EventDispatcherOptions, type EventEnqueuer } from './events/dispatcher.js';
export { type ReconcileReport, Reconciler, type ReconcilerOptions } from './reconciler.js';
export { type RetentionOptions, type RetentionReport, runRetentionOnce } from './retention.js';
export { RetentionSchedule, type RetentionScheduleOptions } from './retention-schedule.js';
export {
  type AttemptInfo,
  HandBackError,
  type RunBuildDeps,
  type RunBuildResult,
  readSpec,
  runBuild,
} from './run-build.js';
export { createWorker, KilnWorker, type WorkerDeps } from './worker.js';
