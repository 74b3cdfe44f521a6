import { builderMembersKey } from '@kiln/core';
import type { ApiDeps } from './deps.js';

export interface CurrentBuilder {
  address: string;
  concurrency: number;
}

/**
 * The builders as the workers see them now: the listed ones, and in place of each
 * `dns+tcp://` name the members a worker last resolved it to (the API resolves nothing). A name
 * no worker has resolved lately, or to no member, stands for itself: nothing is known about it,
 * so nothing is refused or reused on its account. Never empty.
 */
export async function currentBuilders(deps: Pick<ApiDeps, 'config' | 'redis'>): Promise<CurrentBuilder[]> {
  const listed = deps.config.builders;
  const names = listed.filter((b) => b.address.startsWith('dns+tcp://'));
  if (names.length === 0) return listed;
  const published = await deps.redis.mget(...names.map((b) => builderMembersKey(b.address)));
  return listed.flatMap((b) => {
    const i = names.indexOf(b);
    if (i < 0) return [b];
    const members = parseMembers(published[i]);
    // No member (no ready pod) is as unknown as no answer: the name stands for itself.
    return members && members.length > 0
      ? members.map((address) => ({ address, concurrency: b.concurrency }))
      : [b];
  });
}

function parseMembers(raw: string | null | undefined): string[] | undefined {
  if (!raw) return undefined;
  try {
    const v: unknown = JSON.parse(raw);
    return Array.isArray(v) && v.every((a) => typeof a === 'string') ? v : undefined;
  } catch {
    return undefined;
  }
}
