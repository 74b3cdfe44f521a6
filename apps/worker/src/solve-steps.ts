import type { StatusEvent } from '@kiln/buildkit-client';
import { type BuildSteps, MAX_LISTED_STEPS } from '@kiln/core';

/** A RUN step's name is its command line, the tenant's to make as long as the Dockerfile allows. */
export const MAX_STEP_NAME_CHARS = 1000;
export const MAX_STEP_ERROR_CHARS = 4000;

/** One ended step, as the timeline and the trace show it. */
export interface EndedStep {
  digest: string;
  name: string;
  started?: Date;
  completed?: Date;
  cached: boolean;
  error?: string;
}

const clip = (text: string, max: number) => (text.length > max ? `${text.slice(0, max - 1)}…` : text);

/**
 * The steps (vertices) of one solve as its status stream ended them: cached, completed or failed.
 * The first maxListed are kept (names and errors clipped); the rest are only counted. The BuildKit
 * cache counters (cached of all) come from here and count every step.
 */
export class SolveSteps {
  private readonly listed = new Map<string, EndedStep>();
  /** Steps past maxListed: digest → cached. */
  private readonly omitted = new Map<string, boolean>();

  constructor(private readonly maxListed = MAX_LISTED_STEPS) {}

  record(event: StatusEvent): void {
    if (event.type !== 'vertex' || event.state === 'started') return;
    const v = event.vertex;
    // A vertex BuildKit runs again ends again: a digest seen again only refreshes its entry.
    if (!this.listed.has(v.digest) && this.listed.size >= this.maxListed) {
      this.omitted.set(v.digest, v.cached);
      return;
    }
    this.listed.set(v.digest, {
      digest: v.digest,
      name: clip(v.name, MAX_STEP_NAME_CHARS),
      ...(v.started ? { started: v.started } : {}),
      ...(v.completed ? { completed: v.completed } : {}),
      cached: v.cached,
      ...(v.error ? { error: clip(v.error, MAX_STEP_ERROR_CHARS) } : {}),
    });
  }

  /** Listed steps, in the order they ended. */
  list(): EndedStep[] {
    return [...this.listed.values()];
  }

  /** What the build page's timeline gets (stepsKey). */
  toStored(): BuildSteps {
    return {
      steps: this.list().map((v) => ({
        name: v.name,
        started: v.started?.toISOString() ?? null,
        completed: v.completed?.toISOString() ?? null,
        cached: v.cached,
        error: v.error ?? null,
      })),
      omitted: this.omitted.size,
    };
  }

  counts(): { vertices: number; cached: number } {
    let cached = 0;
    for (const v of this.listed.values()) if (v.cached) cached += 1;
    for (const c of this.omitted.values()) if (c) cached += 1;
    return { vertices: this.listed.size + this.omitted.size, cached };
  }
}
