/**
 * Every error code the API answers with, stable across versions: callers branch on them. Which
 * HTTP status each one is stays with the server (ERROR_STATUS in @kiln/core).
 */
export const ERROR_CODES = [
  'invalid_spec',
  'invalid_context',
  'invalid_request',
  'invalid_endpoint',
  'unauthorized',
  'invalid_signature',
  'forbidden',
  'not_found',
  'conflict',
  'gone',
  'request_timeout',
  'context_too_large',
  'payload_too_large',
  'unsupported_media_type',
  'range_not_satisfiable',
  'rate_limited',
  'quota_exceeded',
  'internal',
  'unavailable',
  'no_builder_available',
  'no_capable_builder',
] as const;
export type ErrorCode = (typeof ERROR_CODES)[number];
