import { Type } from 'typebox';

/** Build lifecycle: queued → running → succeeded | failed | canceled; expired once retention deletes the artifact. */
export const BUILD_STATUSES = ['queued', 'running', 'succeeded', 'failed', 'canceled', 'expired'] as const;
export type BuildStatus = (typeof BUILD_STATUSES)[number];

/** Statuses a build never leaves (expired only follows a final one). */
export const FINAL_STATUSES: ReadonlySet<BuildStatus> = new Set([
  'succeeded',
  'failed',
  'canceled',
  'expired',
]);

// `type` beside `enum` lets the response serializer write it as a plain string.
export const BuildStatusSchema = Type.Enum(BUILD_STATUSES, { type: 'string' });
