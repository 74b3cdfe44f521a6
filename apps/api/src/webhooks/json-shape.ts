/**
 * A bound on a JSON text's shape, checked before it is parsed. Webhook deliveries are parsed
 * before their signature can be checked (the payload names the repository, whose triggers hold
 * the secrets), so anyone may send one: within the size limit, a deeply nested or
 * container-packed text costs JSON.parse seconds of the event loop every tenant shares (5 MiB of
 * `[` took ~1.8 s here, 1.7 million empty arrays ~0.7 s). A scan of the text is linear and cheap;
 * what providers send nests a few levels and holds some thousands of objects and arrays.
 */
import { AppError } from '@kiln/core';

export interface JsonShapeLimits {
  /** Most objects and arrays nested in one another. */
  maxDepth: number;
  /** Most objects and arrays in all. */
  maxContainers: number;
}

const QUOTE = 0x22;
const BACKSLASH = 0x5c;
const OPEN_ARRAY = 0x5b;
const OPEN_OBJECT = 0x7b;
const CLOSE_ARRAY = 0x5d;
const CLOSE_OBJECT = 0x7d;

/** Throws `invalid_request` when `text` nests deeper or holds more containers than `limits` allow. */
export function checkJsonShape(text: string, limits: JsonShapeLimits): void {
  let depth = 0;
  let containers = 0;
  let inString = false;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (inString) {
      if (c === BACKSLASH) i++;
      else if (c === QUOTE) inString = false;
    } else if (c === QUOTE) inString = true;
    else if (c === OPEN_ARRAY || c === OPEN_OBJECT) {
      if (++depth > limits.maxDepth) {
        throw new AppError('invalid_request', `the payload nests deeper than ${limits.maxDepth} levels`);
      }
      if (++containers > limits.maxContainers) {
        throw new AppError(
          'invalid_request',
          `the payload holds more than ${limits.maxContainers} objects and arrays`,
        );
      }
    } else if (c === CLOSE_ARRAY || c === CLOSE_OBJECT) depth--;
  }
}
