/** Why a running build's AbortController was aborted. */
export type AbortKind = 'cancel' | 'timeout' | 'shutdown' | 'storage' | 'output_too_large' | 'superseded';

export class BuildAbort extends Error {
  constructor(
    readonly kind: AbortKind,
    message: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
    this.name = 'BuildAbort';
  }
}

/** The reason a signal was aborted with, when it is one of ours. */
export function abortOf(signal: AbortSignal): BuildAbort | undefined {
  return signal.aborted && signal.reason instanceof BuildAbort ? signal.reason : undefined;
}

/**
 * The builds this process runs, by build id, each run with its AbortController: one build may
 * have two runs here for a while (its job delivered again while the first still ran), and a
 * cancel or a shutdown must reach both. A cancel that arrives just before its build registers
 * (the job was being picked up) is remembered for a while and applied at registration.
 */
export class ActiveBuilds {
  private readonly running = new Map<string, Set<AbortController>>();
  private readonly recentCancels = new Map<string, number>();
  private readonly idleWaiters: Array<() => void> = [];
  private stopping = false;

  constructor(private readonly rememberCancelsMs = 10 * 60_000) {}

  /** Runs in progress. */
  get size(): number {
    let n = 0;
    for (const runs of this.running.values()) n += runs.size;
    return n;
  }

  ids(): string[] {
    return [...this.running.keys()];
  }

  register(buildId: string): AbortController {
    const controller = new AbortController();
    const runs = this.running.get(buildId) ?? new Set();
    runs.add(controller);
    this.running.set(buildId, runs);
    if (this.recentCancels.delete(buildId)) {
      controller.abort(new BuildAbort('cancel', 'build canceled'));
    }
    return controller;
  }

  unregister(buildId: string, controller: AbortController): void {
    const runs = this.running.get(buildId);
    if (runs?.delete(controller) && runs.size === 0) this.running.delete(buildId);
    if (this.running.size === 0) for (const wake of this.idleWaiters.splice(0)) wake();
  }

  /**
   * Aborts `buildId` if it runs here (true). Remembered for a while either way: a run already
   * past its last look at the abort (requeueing after an infrastructure failure) goes back to the
   * queue, and its next attempt, here or elsewhere, must find the cancel at registration.
   */
  cancel(buildId: string): boolean {
    const now = Date.now();
    for (const [id, at] of this.recentCancels)
      if (now - at > this.rememberCancelsMs) this.recentCancels.delete(id);
    this.recentCancels.set(buildId, now);
    const runs = this.running.get(buildId);
    if (!runs) return false;
    for (const controller of runs)
      if (!controller.signal.aborted) controller.abort(new BuildAbort('cancel', 'build canceled'));
    return true;
  }

  /** The worker is stopping: every build not aborted already is aborted as `shutdown`. */
  shutDown(message: string): void {
    this.stopping = true;
    const reason = new BuildAbort('shutdown', message);
    for (const runs of this.running.values())
      for (const controller of runs) if (!controller.signal.aborted) controller.abort(reason);
  }

  /**
   * Since shutDown(): also builds aborted before it (canceled, timed out) must stop retrying
   * their writes while PostgreSQL is away, or stop() waits for them.
   */
  get isStopping(): boolean {
    return this.stopping;
  }

  /** Resolves once nothing runs. */
  whenIdle(): Promise<void> {
    if (this.running.size === 0) return Promise.resolve();
    return new Promise((resolve) => this.idleWaiters.push(resolve));
  }
}
