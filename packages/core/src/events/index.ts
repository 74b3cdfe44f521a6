export {
  checkEndpointUrl,
  generateEndpointSecret,
  MAX_ENDPOINT_URL_LENGTH,
  MAX_ENDPOINTS_PER_PROJECT,
} from './endpoints.js';
export {
  BUILD_EVENT_TYPES,
  type BuildEvent,
  type BuildEventData,
  type BuildEventType,
  buildEventData,
  eventBody,
  recordBuildEvents,
} from './outbox.js';
export { EVENT_JOB_NAME, type EventJobData, eventJobs, QUEUE_EVENTS } from './queue.js';
export {
  DEFAULT_SIGNATURE_TOLERANCE_SECONDS,
  EVENT_ID_HEADER,
  SIGNATURE_HEADER,
  type SignatureCheck,
  signKilnEvent,
  verifyKilnSignature,
} from './signature.js';
