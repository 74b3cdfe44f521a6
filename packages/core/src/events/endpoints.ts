import { randomBytes } from 'node:crypto';
import { AppError } from '../errors.js';
import type { Network } from '../net/address.js';
import { refusedHost } from '../net/host.js';

export const MAX_ENDPOINT_URL_LENGTH = 2048;
/** Active endpoints one project may have: each final state costs one POST per endpoint. */
export const MAX_ENDPOINTS_PER_PROJECT = 20;

/** The HMAC key of an endpoint's signatures: Kiln makes it (never a caller's weak choice), shown once. */
export function generateEndpointSecret(): string {
  return `whsec_${randomBytes(32).toString('base64url')}`;
}

/**
 * An endpoint URL as Kiln will POST to it (normalized), or AppError `invalid_endpoint` saying
 * what is wrong. Credentials in the URL are refused: they would be stored and shown in clear, and
 * the signature already proves the sender. Whitespace and control characters are refused rather
 * than silently dropped, as the WHATWG parser would. A host that is a special-purpose address
 * (loopback, private, link-local, ...) or a localhost name is refused unless in `allowedNetworks`
 * (SSRF); names that resolve to such addresses are refused when delivering.
 */
export function checkEndpointUrl(value: unknown, allowedNetworks: readonly Network[]): string {
  const bad = (why: string) => new AppError('invalid_endpoint', `the endpoint url ${why}`);
  if (typeof value !== 'string') throw bad('must be a string: send {"url": "https://..."}');
  if (value === '') throw bad('is empty');
  if (value.length > MAX_ENDPOINT_URL_LENGTH) {
    throw bad(`is longer than ${MAX_ENDPOINT_URL_LENGTH} characters`);
  }
  // biome-ignore lint/suspicious/noControlCharactersInRegex: refusing control characters is the point
  if (/[\s\x00-\x1f\x7f]/.test(value)) throw bad('contains whitespace or control characters');
  let url: URL;
  try {
    url = new URL(value);
  } catch {
    throw bad('is not an absolute URL');
  }
  if (url.protocol !== 'https:' && url.protocol !== 'http:') {
    throw bad(`must be http:// or https://, not ${url.protocol}`);
  }
  if (!url.hostname) throw bad('has no host');
  if (url.username || url.password) throw bad('must not contain credentials (user:password@)');
  if (url.hash) throw bad('must not have a #fragment (it is never sent)');
  const refused = refusedHost(url.hostname, allowedNetworks);
  if (refused) throw bad(`points at ${url.hostname}, ${refused}: events are not sent to such hosts`);
  return url.href;
}
