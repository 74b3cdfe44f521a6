import { AppError } from '@kiln/core';

/** Uploads that may wait for a slot, per slot: a burst of parallel CI jobs waits, a flood is refused. */
const WAITING_PER_SLOT = 8;

/**
 * Context uploads in progress per project, in this API process. Each holds a temp file as large
 * as the context limit until the build is created, so without a cap one project could fill the
 * disk every project's uploads need. Past the cap an upload waits, its body unread (TCP holds the
 * sender back), in arrival order; past the waiting room it is refused at once (`429`).
 */
export class UploadSlots {
  private readonly projects = new Map<string, { running: number; waiting: Array<() => void> }>();

  constructor(private readonly perProject: number) {}

  /** Takes a slot of `projectId`, waiting for one if need be; the function returned gives it back (once). */
  async take(projectId: string): Promise<() => void> {
    let project = this.projects.get(projectId);
    if (!project) {
      project = { running: 0, waiting: [] };
      this.projects.set(projectId, project);
    }
    const slots = project;
    if (slots.running < this.perProject) slots.running++;
    else if (slots.waiting.length < this.perProject * WAITING_PER_SLOT) {
      // The slot is handed over by the upload that ends, so `running` never drops in between.
      await new Promise<void>((resolve) => slots.waiting.push(resolve));
    } else {
      throw new AppError(
        'rate_limited',
        `this project already has ${slots.running} context uploads in progress here and ${slots.waiting.length} waiting (KILN_MAX_UPLOADS_PER_PROJECT); retry when one has ended`,
      );
    }
    let given = false;
    return () => {
      if (given) return;
      given = true;
      const next = slots.waiting.shift();
      if (next) next();
      else if (--slots.running === 0) this.projects.delete(projectId);
    };
  }
}
