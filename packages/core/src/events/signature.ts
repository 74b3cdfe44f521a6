import { createHmac, timingSafeEqual } from 'node:crypto';

/**
 * The `Kiln-Signature` header of a completion event, Stripe style: `t=<unix seconds>,v1=<hex>`
 * where v1 = HMAC-SHA256(endpoint secret, `<t>.<raw body>`). Signing the time with the body lets a
 * receiver refuse replays: a captured request stops verifying once `t` is older than its tolerance.
 */
export const SIGNATURE_HEADER = 'Kiln-Signature';
/** The delivery id, also the event's `id`: receivers deduplicate on it (an event may arrive twice). */
export const EVENT_ID_HEADER = 'Kiln-Event-Id';
/** What a receiver should accept by default: five minutes either way. */
export const DEFAULT_SIGNATURE_TOLERANCE_SECONDS = 300;

const digest = (secret: string, t: number, body: string | Buffer): string =>
  createHmac('sha256', secret).update(`${t}.`).update(body).digest('hex');

/** The header value for `body` (exactly the bytes sent) signed at `now`. */
export function signKilnEvent(secret: string, body: string | Buffer, now: Date = new Date()): string {
  const t = Math.floor(now.getTime() / 1000);
  return `t=${t},v1=${digest(secret, t, body)}`;
}

export type SignatureCheck =
  | { ok: true; timestamp: number }
  | { ok: false; reason: 'malformed' | 'stale' | 'mismatch' };

/**
 * Checks a `Kiln-Signature` header against the raw request body (verify before parsing the JSON:
 * any re-serialization changes the bytes). `stale`: `t` is more than `toleranceSeconds` away from
 * `now`, either way. Several `v1=` entries are allowed (any may match), so a sender could sign with
 * an old and a new secret during a rotation.
 */
export function verifyKilnSignature(
  header: string | undefined | null,
  body: string | Buffer,
  secret: string,
  toleranceSeconds: number = DEFAULT_SIGNATURE_TOLERANCE_SECONDS,
  now: Date = new Date(),
): SignatureCheck {
  if (typeof header !== 'string' || header.length > 4096) return { ok: false, reason: 'malformed' };
  let t: number | undefined;
  const signatures: Buffer[] = [];
  for (const part of header.split(',')) {
    const eq = part.indexOf('=');
    if (eq < 0) return { ok: false, reason: 'malformed' };
    const key = part.slice(0, eq).trim();
    const value = part.slice(eq + 1).trim();
    if (key === 't') {
      if (t !== undefined || !/^\d{1,12}$/.test(value)) return { ok: false, reason: 'malformed' };
      t = Number(value);
    } else if (key === 'v1') {
      if (!/^[0-9a-f]{64}$/.test(value)) return { ok: false, reason: 'malformed' };
      signatures.push(Buffer.from(value, 'hex'));
    }
    // Other keys (a future v2) are ignored, as Stripe's scheme does.
  }
  if (t === undefined || signatures.length === 0) return { ok: false, reason: 'malformed' };
  if (Math.abs(Math.floor(now.getTime() / 1000) - t) > toleranceSeconds)
    return { ok: false, reason: 'stale' };
  const expected = Buffer.from(digest(secret, t, body), 'hex');
  const match = signatures.some((s) => timingSafeEqual(s, expected));
  return match ? { ok: true, timestamp: t } : { ok: false, reason: 'mismatch' };
}
