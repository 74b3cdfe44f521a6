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
