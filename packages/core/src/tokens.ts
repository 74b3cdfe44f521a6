import { createHash, randomBytes } from 'node:crypto';
import type { ApiToken, PrismaClient, TokenScope } from './db/generated/client.js';

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

/**
 * Creates a project token and returns its row with the secret, which exists only in this answer
 * (the project's POST /v1/tokens, the operator's first token of a project, `npm start`'s).
 */
export async function issueToken(
  prisma: PrismaClient,
  input: { projectId: string; name: string; scope: TokenScope },
): Promise<{ row: ApiToken; token: string }> {
  const token = generateToken();
  const row = await prisma.apiToken.create({ data: { ...input, tokenHash: hashToken(token) } });
  return { row, token };
}
