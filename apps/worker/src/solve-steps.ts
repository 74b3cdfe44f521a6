import type { StatusEvent, VertexInfo } from '@kiln/buildkit-client';

/**
 * The steps (vertices) of one solve as its status stream ended them: cached, completed or failed.
 * The BuildKit cache counters (cached of all) come from here.
 */
export class SolveSteps {
  private readonly ended = new Map<string, VertexInfo>();

  record(event: StatusEvent): void {
    if (event.type === 'vertex' && event.state !== 'started')
      this.ended.set(event.vertex.digest, event.vertex);
  }

  /** Ended steps, in the order they ended. */
  list(): VertexInfo[] {
    return [...this.ended.values()];
  }

  counts(): { vertices: number; cached: number } {
    let cached = 0;
    for (const v of this.ended.values()) if (v.cached) cached += 1;
    return { vertices: this.ended.size, cached };
  }
}
