/**
 * The spec fields of an upload as they arrive: from the query, from form fields and from a JSON
 * `spec` part. Each field is taken once, wherever it comes from: one given in two places (or
 * twice in one) is refused, never silently dropped. docker's repeatable `build-arg=K=V` and
 * `label=K=V` add up, but not to a `buildArgs`/`labels` map given as well.
 */
import { AppError, type BuildSpecInput } from '@kiln/core';

// A Map, not an object: a "__proto__" field must not find Object.prototype here.
const REPEATABLE: ReadonlyMap<string, 'buildArgs' | 'labels'> = new Map([
  ['build-arg', 'buildArgs'],
  ['label', 'labels'],
]);

export class SpecFields {
  // No prototype: a "__proto__" key stays a key (and is then refused as an unknown field).
  private readonly values: Record<string, unknown> = Object.create(null);
  /** Where each field was first given. */
  private readonly where = new Map<string, string>();
  /** Fields given as repeatable `build-arg`/`label` entries only, so far. */
  private readonly lists = new Set<string>();

  add(key: string, value: unknown, where: string): void {
    const list = REPEATABLE.get(key);
    const field = list ?? key;
    const first = this.where.get(field);
    if (first !== undefined && !(list && this.lists.has(field))) {
      const name = list ? `${field} (${key})` : key;
      throw new AppError(
        'invalid_spec',
        first === where
          ? `${name} is given more than once in ${where}`
          : `${name} is given in ${first} and again in ${where}: give it once`,
      );
    }
    if (!list && Array.isArray(value) && where === QUERY) {
      throw new AppError('invalid_spec', `${key} is given more than once in ${where}`);
    }
    this.where.set(field, first ?? where);
    if (list) {
      this.lists.add(field);
      const before = (this.values[field] as unknown[] | undefined) ?? [];
      this.values[field] = [...before, ...(Array.isArray(value) ? value : [value])];
    } else this.values[field] = value;
  }

  /** Every entry of an object (the query, a JSON spec part), from one place. */
  addAll(entries: Record<string, unknown>, where: string): void {
    for (const [k, v] of Object.entries(entries)) this.add(k, v, where);
  }

  get spec(): BuildSpecInput {
    return this.values;
  }
}

export const QUERY = 'the query';
