/**
 * Reads the few fields of a webhook payload Kiln uses, off the event loop. Anyone can send a
 * delivery, and its repository must be read before its signature can be checked; a tenant can
 * sign what it likes with its own trigger's secret. Within the size limit a payload can cost
 * JSON.parse (or a form's decoding) seconds of CPU: millions of nested brackets, hundreds of
 * thousands of distinct keys. On the event loop every tenant's requests would wait that long; in
 * a worker thread only this delivery does, within a time budget, with at most as many threads as
 * the receivers' concurrency limit lets reads run at once. What comes back is a copy of the
 * payload holding only the fields asked for (strings, numbers, booleans, null), so the event loop
 * never builds the payload's objects either.
 */
import { once } from 'node:events';
import { Worker } from 'node:worker_threads';
import { AppError, isAppError } from '@kiln/core';

/** Object keys from the payload's root to a field, e.g. ['repository', 'full_name']. */
export type FieldPath = readonly string[];

export interface PayloadLimits {
  /** Most objects and arrays nested in one another. */
  maxDepth: number;
  /** Most objects and arrays in all. */
  maxContainers: number;
  /** The time a read may take, from the thread's start on it. */
  timeoutMs: number;
  /** The heap a thread may grow to (MiB): a payload that needs more is refused. */
  maxHeapMb: number;
}

interface ReadRequest {
  body: Uint8Array;
  form: boolean;
  paths: readonly FieldPath[];
  maxDepth: number;
  maxContainers: number;
}

type ReadAnswer = { fields: Record<string, unknown> } | { refused: string };

// An eval'd CommonJS worker, self-contained. The scan refuses early, in one pass, what JSON.parse
// would spend long on (nesting, containers); the time budget bounds the rest.
const WORKER_SOURCE = `
const { parentPort } = require('node:worker_threads');
function shapeProblem(text, maxDepth, maxContainers) {
  let depth = 0, containers = 0, inString = false;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (inString) { if (c === 92) i++; else if (c === 34) inString = false; }
    else if (c === 34) inString = true;
    else if (c === 91 || c === 123) {
      if (++depth > maxDepth) return 'the payload nests deeper than ' + maxDepth + ' levels';
      if (++containers > maxContainers) return 'the payload holds more than ' + maxContainers + ' objects and arrays';
    } else if (c === 93 || c === 125) depth--;
  }
  return undefined;
}
const isObject = (v) => typeof v === 'object' && v !== null && !Array.isArray(v);
function read({ body, form, paths, maxDepth, maxContainers }) {
  let json = Buffer.from(body.buffer, body.byteOffset, body.byteLength).toString('utf8');
  if (form) {
    json = new URLSearchParams(json).get('payload');
    if (json === null) return { refused: 'the form has no "payload" field' };
  }
  const problem = shapeProblem(json, maxDepth, maxContainers);
  if (problem) return { refused: problem };
  let payload;
  try { payload = JSON.parse(json); } catch { return { refused: 'the payload is not valid JSON' }; }
  if (!isObject(payload)) return { refused: 'the payload must be a JSON object' };
  const fields = {};
  for (const path of paths) {
    let from = payload, into = fields;
    for (let i = 0; i < path.length && isObject(from); i++) {
      const key = path[i];
      if (!Object.hasOwn(from, key)) break;
      const value = from[key];
      if (i === path.length - 1) {
        if (value === null || ['string', 'number', 'boolean'].includes(typeof value)) into[key] = value;
      } else if (isObject(value)) {
        if (!isObject(into[key])) into[key] = {};
        into = into[key];
      }
      from = value;
    }
  }
  return { fields };
}
parentPort.on('message', (request) => parentPort.postMessage(read(request)));
`;

const exited = () => new Error('the payload reader thread exited');

/** One worker thread, reused while it answers in time; one that does not is terminated. */
class FieldReader {
  private readonly worker: Worker;
  private waiting: ((answer: ReadAnswer | Error) => void) | undefined;
  dead = false;

  private readonly online: Promise<unknown>;

  constructor(maxHeapMb: number) {
    this.worker = new Worker(WORKER_SOURCE, {
      eval: true,
      resourceLimits: { maxOldGenerationSizeMb: maxHeapMb },
    });
    // Also settled when the thread ends before it started (close() during start-up).
    this.online = Promise.race([
      once(this.worker, 'online'),
      once(this.worker, 'exit').then(() => {
        throw exited();
      }),
    ]);
    this.online.catch(() => {});
    this.worker.unref();
    this.worker.on('message', (answer: ReadAnswer) => this.settle(answer));
    this.worker.on('error', (err) => this.settle(err));
    this.worker.on('exit', () => this.settle(exited()));
  }

  private settle(outcome: ReadAnswer | Error): void {
    if (outcome instanceof Error) this.dead = true;
    const waiting = this.waiting;
    this.waiting = undefined;
    waiting?.(outcome);
  }

  async read(request: ReadRequest, timeoutMs: number): Promise<ReadAnswer> {
    // The budget is the read's, not the new thread's start-up.
    await this.online;
    return new Promise<ReadAnswer>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.settle(new AppError('invalid_request', `the payload could not be read within ${timeoutMs} ms`));
        void this.worker.terminate();
      }, timeoutMs);
      this.waiting = (outcome) => {
        clearTimeout(timer);
        if (outcome instanceof Error) reject(outcome);
        else resolve(outcome);
      };
      this.worker.postMessage(request);
    });
  }

  close(): Promise<number> {
    this.dead = true;
    return this.worker.terminate();
  }
}

const STOPPING = () => new AppError('unavailable', 'the API is stopping; deliver again');

export class PayloadFields {
  private readonly idle: FieldReader[] = [];
  private readonly busy = new Set<FieldReader>();
  private closed = false;

  constructor(private readonly limits: PayloadLimits) {}

  /**
   * The payload (a form's is the JSON in its `payload` field) with only the fields at `paths`,
   * those that are strings, numbers, booleans or null. Refuses (`invalid_request`) a payload that
   * is not a JSON object, nests or holds more than the limits allow, or takes longer than the
   * budget. Callers bound how many reads run at once: each takes a thread.
   */
  async read(body: Buffer, form: boolean, paths: readonly FieldPath[]): Promise<Record<string, unknown>> {
    if (this.closed) throw STOPPING();
    const { maxDepth, maxContainers, timeoutMs, maxHeapMb } = this.limits;
    let reader = this.idle.pop();
    // One that ended while idle (say, at its heap limit after it answered) is not reused.
    while (reader?.dead) reader = this.idle.pop();
    reader ??= new FieldReader(maxHeapMb);
    this.busy.add(reader);
    try {
      let answer: ReadAnswer;
      try {
        answer = await reader.read({ body, form, paths, maxDepth, maxContainers }, timeoutMs);
      } catch (err) {
        if (isAppError(err)) throw err;
        if (this.closed) throw STOPPING();
        // The thread ended on it (its heap limit, as a rule): the payload's doing.
        throw new AppError(
          'invalid_request',
          'the payload could not be read: it needs more memory than a payload may',
          {
            cause: err,
          },
        );
      }
      if ('refused' in answer) throw new AppError('invalid_request', answer.refused);
      return answer.fields;
    } finally {
      this.busy.delete(reader);
      if (!reader.dead && !this.closed) this.idle.push(reader);
    }
  }

  async close(): Promise<void> {
    this.closed = true;
    const readers = [...this.idle, ...this.busy];
    this.idle.length = 0;
    this.busy.clear();
    await Promise.all(readers.map((r) => r.close()));
  }
}
