import type { StatusResponse, Timestamp } from './wire/control-messages.js';

/** A vertex of the build graph as BuildKit reports it (`[builder 2/3] RUN make`, ...). */
export interface VertexInfo {
  digest: string;
  name: string;
  inputs: string[];
  cached: boolean;
  started?: Date;
  completed?: Date;
  error?: string;
}

export type StatusEvent =
  | { type: 'vertex'; state: 'started' | 'completed' | 'cached' | 'error'; vertex: VertexInfo }
  | { type: 'log'; vertex: VertexInfo; stream: number; data: Buffer; timestamp: Date }
  | {
      type: 'progress';
      vertex: VertexInfo;
      id: string;
      name: string;
      current: number;
      total: number;
      started?: Date;
      completed: boolean;
      timestamp: Date;
    }
  | { type: 'warning'; vertex: VertexInfo; level: number; message: string; detail: string[]; url: string };

function toDate(ts: Timestamp | null | undefined): Date | undefined {
  if (!ts) return undefined;
  const ms = ts.seconds * 1000 + Math.floor(ts.nanos / 1e6);
  return ms > 0 ? new Date(ms) : undefined;
}

/**
 * Turns BuildKit's cumulative, repetitive status stream into discrete typed events: each
 * vertex state is reported once, logs and progress as they come.
 */
export class StatusTracker {
  private readonly vertices = new Map<string, VertexInfo>();
  private readonly reported = new Set<string>();

  vertex(digest: string): VertexInfo {
    let v = this.vertices.get(digest);
    if (!v) {
      v = { digest, name: digest, inputs: [], cached: false };
      this.vertices.set(digest, v);
    }
    return v;
  }

  /** The vertex BuildKit marked as failed, if any. */
  failedVertex(): VertexInfo | undefined {
    return [...this.vertices.values()].find((v) => v.error);
  }

  update(res: StatusResponse): StatusEvent[] {
    const events: StatusEvent[] = [];
    const once = (v: VertexInfo, state: 'started' | 'completed' | 'cached' | 'error') => {
      const key = `${v.digest}:${state}`;
      if (this.reported.has(key)) return;
      this.reported.add(key);
      events.push({ type: 'vertex', state, vertex: v });
    };
    for (const raw of res.vertexes ?? []) {
      const v = this.vertex(raw.digest);
      v.name = raw.name || v.name;
      v.inputs = raw.inputs ?? v.inputs;
      v.cached = raw.cached;
      const started = toDate(raw.started);
      const completed = toDate(raw.completed);
      if (v.completed && !completed && started) {
        // Started again after it completed: BuildKit runs some vertices more than once (the
        // local source behind `[internal] load build context` completes at once, then starts
        // again for the transfer). It is running, and it will start and end again, as buildctl
        // shows it.
        v.completed = undefined;
        this.reported.delete(`${v.digest}:started`);
        this.reported.delete(`${v.digest}:completed`);
      }
      v.started = started ?? v.started;
      v.completed = completed ?? v.completed;
      if (raw.error) v.error = raw.error;
      if (v.started || v.cached) once(v, 'started');
      if (v.cached) once(v, 'cached');
      else if (v.error) once(v, 'error');
      else if (v.completed) once(v, 'completed');
    }
    for (const s of res.statuses ?? []) {
      events.push({
        type: 'progress',
        vertex: this.vertex(s.vertex),
        id: s.ID,
        name: s.name || s.ID,
        current: Number(s.current),
        total: Number(s.total),
        started: toDate(s.started),
        completed: Boolean(toDate(s.completed)),
        timestamp: toDate(s.timestamp) ?? new Date(),
      });
    }
    for (const l of res.logs ?? []) {
      events.push({
        type: 'log',
        vertex: this.vertex(l.vertex),
        stream: Number(l.stream),
        data: l.msg,
        timestamp: toDate(l.timestamp) ?? new Date(),
      });
    }
    for (const w of res.warnings ?? []) {
      events.push({
        type: 'warning',
        vertex: this.vertex(w.vertex),
        level: Number(w.level),
        message: w.short.toString('utf8'),
        detail: (w.detail ?? []).map((d) => d.toString('utf8')),
        url: w.url,
      });
    }
    return events;
  }
}
