import { createHash, randomBytes } from 'node:crypto';

/**
 * API tokens are shown once and stored only as their sha256; a request's token is found by
 * that hash (an index lookup), so no secret is ever compared in JS.
 */
export function generateToken(): string {
  return `kiln_${randomBytes(24).toString('base64url')}`;
}

export function hashToken(token: string): string {
  return createHash('sha256').update(token).digest('hex');
}
