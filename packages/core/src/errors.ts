import type { ErrorCode } from '@kiln/contract';

export type { ErrorCode };

/**
 * Every error Kiln raises on purpose has a stable `code` (the contract lists them);
 * `httpStatusFor` is the one place codes become HTTP statuses. Messages are written for the
 * caller: what was wrong and what to do about it.
 */
export const ERROR_STATUS = {
  invalid_spec: 400,
  invalid_context: 400,
  invalid_request: 400,
  invalid_endpoint: 400,
  unauthorized: 401,
  /** A webhook delivery whose signature or token no configured trigger accepts. */
  invalid_signature: 401,
  forbidden: 403,
  not_found: 404,
  conflict: 409,
  gone: 410,
  /** An upload that sent nothing for the idle timeout, or was still arriving at the request deadline. */
  request_timeout: 408,
  context_too_large: 413,
  payload_too_large: 413,
  unsupported_media_type: 415,
  /** A download's Range starts past its end (a resumed download that was complete: wget -c stops). */
  range_not_satisfiable: 416,
  rate_limited: 429,
  /** A project quota (queued builds, ...): the message names the limit. */
  quota_exceeded: 429,
  internal: 500,
  unavailable: 503,
  no_builder_available: 503,
  /** No configured builder has the platform or feature the spec asks for: the message names them. */
  no_capable_builder: 422,
} as const satisfies Record<ErrorCode, number>;

export class AppError extends Error {
  constructor(
    readonly code: ErrorCode,
    message: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
    this.name = 'AppError';
  }

  get status(): number {
    return ERROR_STATUS[this.code];
  }

  toJSON(): { error: { code: ErrorCode; message: string } } {
    return { error: { code: this.code, message: this.message } };
  }
}

export function httpStatusFor(code: ErrorCode): number {
  return ERROR_STATUS[code];
}

export function isAppError(err: unknown): err is AppError {
  return err instanceof AppError;
}
