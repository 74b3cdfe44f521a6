import { AppError } from '@kiln/core';

/**
 * The live log streams open in this API process: at most `maxPerProject` per project (counted
 * per process, not across replicas), and every one can be ended at once (shutdown).
 */
export class LogFollowers {
  private readonly perProject = new Map<string, number>();
  private readonly open = new Set<() => void>();

  constructor(private readonly maxPerProject: number) {}

  /**
   * Counts a new stream of `projectId`, which `stop` ends; throws `rate_limited` past the cap.
   * Returns the release function to call once the stream is over.
   */
  admit(projectId: string, stop: () => void): () => void {
    const count = this.perProject.get(projectId) ?? 0;
    if (count >= this.maxPerProject) {
      throw new AppError(
        'rate_limited',
        `this project already follows ${count} live logs (KILN_MAX_LOG_FOLLOWERS_PER_PROJECT); close one or read the log as text`,
      );
    }
    this.perProject.set(projectId, count + 1);
    this.open.add(stop);
    let released = false;
    return () => {
      if (released) return;
      released = true;
      this.open.delete(stop);
      const left = (this.perProject.get(projectId) ?? 1) - 1;
      if (left > 0) this.perProject.set(projectId, left);
      else this.perProject.delete(projectId);
    };
  }

  /** Ends every stream (each says why and releases itself). */
  stopAll(): void {
    for (const stop of [...this.open]) stop();
  }
}
