import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';

/** API tokens are shown once and stored only as their sha256. */
export function generateToken(): string {
  return `kiln_${randomBytes(24).toString('base64url')}`;
}

export function hashToken(token: string): string {
  return createHash('sha256').update(token).digest('hex');
}

export function safeEqual(a: string, b: string): boolean {
  const x = Buffer.from(a);
  const y = Buffer.from(b);
  return x.length === y.length && timingSafeEqual(x, y);
}
