import { type EventEnqueuer, eventJobs } from '@kiln/core';
import type { ApiDeps } from './deps.js';

/**
 * Enqueues the completion-event deliveries a final-state transaction of the API committed (a
 * cancel, a result-cache answer). Never throws: with Redis away the rows stay pending and the
 * worker's event sweep enqueues them.
 */
export function eventEnqueuer(deps: Pick<ApiDeps, 'eventQueue' | 'config' | 'logger'>): EventEnqueuer {
  return {
    async enqueue(deliveryIds) {
      if (deliveryIds.length === 0) return;
      try {
        await deps.eventQueue.addBulk(eventJobs(deliveryIds, deps.config.events));
      } catch (err) {
        deps.logger.warn(
          { deliveries: deliveryIds, err: (err as Error).message },
          'enqueueing events failed; the worker will enqueue them',
        );
      }
    },
  };
}
