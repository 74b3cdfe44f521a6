import { ConcurrencyLimit, KeyedConcurrencyLimit } from './concurrency-limit.js';

/** Uploads that may wait for a slot, per slot: a burst of parallel CI jobs waits, a flood is refused. */
const WAITING_PER_SLOT = 8;

/**
 * Context uploads in progress per project, in this API process. Each holds a temp file as large
 * as the context limit until the build is created, so without a cap one project could fill the
 * disk every project's uploads need. Past the cap an upload waits, its body unread (TCP holds the
 * sender back), in arrival order; past the waiting room it is refused at once (`429`).
 */
export class UploadSlots {
  private readonly projects: KeyedConcurrencyLimit;

  constructor(perProject: number) {
    this.projects = new KeyedConcurrencyLimit(
      () =>
        new ConcurrencyLimit(
          perProject,
          perProject * WAITING_PER_SLOT,
          'context uploads',
          (running, waiting) =>
            `this project already has ${running} context uploads in progress here and ${waiting} waiting (KILN_MAX_UPLOADS_PER_PROJECT); retry when one has ended`,
        ),
    );
  }

  /** Takes a slot of `projectId`, waiting for one if need be; the function returned gives it back (once). */
  take(projectId: string): Promise<() => void> {
    return this.projects.acquire(projectId);
  }
}
