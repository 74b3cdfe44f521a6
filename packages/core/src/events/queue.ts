/** BullMQ queue of event deliveries; a job's id is its delivery's id, so a delivery is queued at most once. */
export const QUEUE_EVENTS = 'kiln-events';
export const EVENT_JOB_NAME = 'deliver';
export interface EventJobData {
  deliveryId: string;
  /** Set by a worker that sent the job back while its project had every place taken. */
  projectId?: string;
}

/**
 * The jobs that deliver these deliveries (for `queue.addBulk`), as the API and the worker enqueue
 * them: retried with exponential backoff. The delivery row counts attempts, so a job re-enqueued
 * by the sweep does not get a fresh allowance.
 */
export function eventJobs(deliveryIds: readonly string[], options: { attempts: number; backoffMs: number }) {
  return deliveryIds.map((id) => ({
    name: EVENT_JOB_NAME,
    data: { deliveryId: id } satisfies EventJobData,
    opts: {
      jobId: id,
      attempts: options.attempts,
      backoff: { type: 'exponential', delay: options.backoffMs },
      removeOnComplete: { age: 3600, count: 10_000 },
      removeOnFail: { age: 24 * 3600 },
    },
  }));
}
