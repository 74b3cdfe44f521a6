/**
 * The credentials key (KILN_CREDENTIALS_KEY, else KILN_SIGNING_KEY) and the ones it replaced
 * (KILN_CREDENTIALS_PREVIOUS_KEYS): what Kiln seals at rest goes under the current key, and opens
 * under any of them, so the operator can change the key without losing what the old one sealed.
 * Registry logins are sealed again under the current key when a worker starts and at each
 * retention round (RegistryCredentialStore.resealStale); build secrets wait in Redis for a day
 * plus every attempt's timeout at most. The steps of a change, in which no process ever meets a
 * value it cannot open, are in the README ("Image push").
 */
import { hkdfSync } from 'node:crypto';

export interface CredentialsKeys {
  current: Buffer;
  /** Newest first; tried after the current key. */
  previous: readonly Buffer[];
}

/** The 32-byte key derived from an operator's secret. */
export function credentialsKey(secret: string): Buffer {
  return Buffer.from(hkdfSync('sha256', secret, 'kiln', 'registry-credentials', 32));
}

export function credentialsKeysOf(current: string, previous: readonly string[] = []): CredentialsKeys {
  return { current: credentialsKey(current), previous: previous.map(credentialsKey) };
}

/**
 * What `open` returns under the first key that opens it, current first; `stale` when that was a
 * previous key (the value is due to be sealed again). Undefined when none does.
 */
export function openUnderAny<T>(
  keys: CredentialsKeys,
  open: (key: Buffer) => T | undefined,
): { value: T; stale: boolean } | undefined {
  for (const [i, key] of [keys.current, ...keys.previous].entries()) {
    const value = open(key);
    if (value !== undefined) return { value, stale: i > 0 };
  }
  return undefined;
}
