/**
 * What PostgreSQL cannot store in a text or jsonb column: a NUL, or a lone UTF-16 surrogate
 * (JSON's `"\ud800"`, which no UTF-8 encodes). Either reaching a query fails it with a driver
 * error; refused where input enters, it is the caller's 400 instead of a 500.
 */
const UNSTORABLE = /[\0\p{Cs}]/u;

/** Why `text` cannot be stored, or undefined when it can. */
export function unstorable(text: string): string | undefined {
  const found = UNSTORABLE.exec(text)?.[0];
  if (found === undefined) return undefined;
  return found === '\0' ? 'a NUL character' : 'a lone UTF-16 surrogate (half of a character)';
}

/**
 * The first string or key of a parsed JSON value that cannot be stored: where, and why. Walked
 * with a stack of its own: JSON nested deeper than the call stack allows is still answered.
 */
export function findUnstorable(value: unknown): string | undefined {
  const pending: Array<[unknown, string]> = [[value, '$']];
  for (let next = pending.pop(); next !== undefined; next = pending.pop()) {
    const [item, at] = next;
    if (typeof item === 'string') {
      const why = unstorable(item);
      if (why) return `${at} holds ${why}`;
    } else if (item !== null && typeof item === 'object') {
      const list = Array.isArray(item);
      for (const [key, child] of Object.entries(item)) {
        const why = list ? undefined : unstorable(key);
        if (why) return `a key of ${at} holds ${why}`;
        // Deep or long paths stop growing: the message names where, not all of the way there.
        const path = at.length > 200 ? at : list ? `${at}[${key}]` : `${at}.${key.slice(0, 64)}`;
        pending.push([child, path]);
      }
    }
  }
  return undefined;
}
