/**
 * What Kiln reads from a GitHub or GitLab push delivery (an inbound webhook): its headers (event,
 * push delivery id, the credential), how the credential is checked against a trigger's secret, and the push itself.
 * Checks are constant-time: a forger learns nothing from how long a rejection takes.
 */
import { createHash, createHmac, timingSafeEqual } from 'node:crypto';
import { AppError } from '@kiln/core';
import type { FieldPath } from './payload-fields.js';

export type ProviderName = 'github' | 'gitlab';

export interface PushDeliveryHeaders {
  event: string;
  /** X-GitHub-Delivery or X-Gitlab-Event-UUID: the same on a redelivery; GitLab sends none before 15.x. */
  pushDeliveryId?: string;
  /** The signature (GitHub) or token (GitLab) to check. */
  credential: string;
}

/** A push as the payload describes it; `commit` is null when the push deleted the branch. */
export interface Push {
  ref: string;
  commit: string | null;
  cloneUrl: string | undefined;
  /**
   * When the push happened (unix seconds), as the signed payload says: GitHub's
   * `repository.pushed_at`. GitLab's push payload has no such time, so its pushes carry none.
   */
  pushedAt?: number;
}

export interface Provider {
  name: ProviderName;
  readHeaders(headers: Record<string, string | string[] | undefined>): PushDeliveryHeaders;
  /** The payload's fields the methods below read: all that is read of a payload (payload-fields.ts). */
  fields: readonly FieldPath[];
  /** The repository the payload is about, as triggers store it (lowercase). */
  repositoryOf(payload: Record<string, unknown>): string | undefined;
  verify(secret: string, rawBody: Buffer, credential: string): boolean;
  isPush(event: string): boolean;
  pushOf(payload: Record<string, unknown>): Push;
}

const MAX_PUSH_DELIVERY_ID = 128;
const DELETED = /^0+$/;

function header(
  headers: Record<string, string | string[] | undefined>,
  name: string,
  required: 'invalid_request' | 'invalid_signature' | undefined,
): string | undefined {
  const value = headers[name.toLowerCase()];
  const text = Array.isArray(value) ? undefined : value?.trim();
  if (text) return text;
  if (required)
    throw new AppError(
      required,
      `the ${name} header is missing${Array.isArray(value) ? ' (or given twice)' : ''}`,
    );
  return undefined;
}

function pushDeliveryId(value: string | undefined, name: string): string | undefined {
  if (value === undefined) return undefined;
  if (value.length > MAX_PUSH_DELIVERY_ID || !/^[\x21-\x7e]+$/.test(value)) {
    throw new AppError(
      'invalid_request',
      `${name} must be 1-${MAX_PUSH_DELIVERY_ID} printable ASCII characters`,
    );
  }
  return value;
}

const field = (value: unknown, key: string): unknown =>
  typeof value === 'object' && value !== null && !Array.isArray(value)
    ? (value as Record<string, unknown>)[key]
    : undefined;
const text = (value: unknown): string | undefined =>
  typeof value === 'string' && value !== '' ? value : undefined;

/** Equal-length digests compared in constant time (hashing first hides the secret's length). */
function sameSecret(given: string, expected: string): boolean {
  const digest = (s: string) => createHash('sha256').update(s).digest();
  return timingSafeEqual(digest(given), digest(expected));
}

export const github: Provider = {
  name: 'github',
  readHeaders(headers) {
    const event = header(headers, 'X-GitHub-Event', 'invalid_request') as string;
    const id = pushDeliveryId(header(headers, 'X-GitHub-Delivery', 'invalid_request'), 'X-GitHub-Delivery');
    const credential = header(headers, 'X-Hub-Signature-256', 'invalid_signature') as string;
    return { event, ...(id ? { pushDeliveryId: id } : {}), credential };
  },
  fields: [
    ['repository', 'full_name'],
    ['repository', 'pushed_at'],
    ['repository', 'clone_url'],
    ['ref'],
    ['after'],
    ['deleted'],
  ],
  repositoryOf: (payload) => text(field(payload.repository, 'full_name'))?.toLowerCase(),
  verify(secret, rawBody, credential) {
    const match = /^sha256=([0-9a-f]{64})$/i.exec(credential);
    if (!match) return false;
    const expected = createHmac('sha256', secret).update(rawBody).digest();
    return timingSafeEqual(Buffer.from(match[1] as string, 'hex'), expected);
  },
  isPush: (event) => event === 'push',
  pushOf(payload) {
    const after = text(payload.after);
    // Unix seconds in push payloads (other events carry an ISO date, never read here).
    const pushedAt = field(payload.repository, 'pushed_at');
    return {
      ref: text(payload.ref) ?? '',
      commit: payload.deleted === true || !after || DELETED.test(after) ? null : after.toLowerCase(),
      cloneUrl: text(field(payload.repository, 'clone_url')),
      ...(typeof pushedAt === 'number' && Number.isFinite(pushedAt) ? { pushedAt } : {}),
    };
  },
};

export const gitlab: Provider = {
  name: 'gitlab',
  readHeaders(headers) {
    const event = header(headers, 'X-Gitlab-Event', 'invalid_request') as string;
    const id = pushDeliveryId(header(headers, 'X-Gitlab-Event-UUID', undefined), 'X-Gitlab-Event-UUID');
    const credential = header(headers, 'X-Gitlab-Token', 'invalid_signature') as string;
    return { event, ...(id ? { pushDeliveryId: id } : {}), credential };
  },
  fields: [
    ['project', 'path_with_namespace'],
    ['project', 'git_http_url'],
    ['repository', 'git_http_url'],
    ['ref'],
    ['checkout_sha'],
    ['after'],
  ],
  repositoryOf: (payload) => text(field(payload.project, 'path_with_namespace'))?.toLowerCase(),
  verify: (secret, _rawBody, credential) => sameSecret(credential, secret),
  isPush: (event) => event === 'Push Hook',
  pushOf(payload) {
    // checkout_sha is null when the push deleted the branch; `after` is then all zeros.
    const commit = text(payload.checkout_sha) ?? text(payload.after);
    return {
      ref: text(payload.ref) ?? '',
      commit: !commit || DELETED.test(commit) ? null : commit.toLowerCase(),
      cloneUrl:
        text(field(payload.project, 'git_http_url')) ?? text(field(payload.repository, 'git_http_url')),
    };
  },
};
