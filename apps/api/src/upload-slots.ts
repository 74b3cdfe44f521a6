import { AppError } from '@kiln/core';

/**
 * Context uploads in progress per project, in this API process. Each holds a temp file as large
 * as the context limit until the build is created, so without a cap one project could fill the
 * disk every project's uploads need. Past the cap an upload is refused at once (`429`), before
 * its body is read.
 */
export class UploadSlots {
  private readonly inFlight = new Map<string, number>();

  constructor(private readonly perProject: number) {}

  /** Takes a slot of `projectId`; the function returned gives it back (once). */
  take(projectId: string): () => void {
    const held = this.inFlight.get(projectId) ?? 0;
    if (held >= this.perProject) {
      throw new AppError(
        'rate_limited',
        `this project already has ${held} context uploads in progress here (KILN_MAX_UPLOADS_PER_PROJECT); retry when one has ended`,
      );
    }
    this.inFlight.set(projectId, held + 1);
    let given = false;
    return () => {
      if (given) return;
      given = true;
      const left = (this.inFlight.get(projectId) ?? 1) - 1;
      if (left > 0) this.inFlight.set(projectId, left);
      else this.inFlight.delete(projectId);
    };
  }
}
