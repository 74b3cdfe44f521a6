/** gRPC status codes, the numbers every gRPC implementation and BuildKit use. */
export const status = {
  OK: 0,
  CANCELLED: 1,
  UNKNOWN: 2,
  INVALID_ARGUMENT: 3,
  DEADLINE_EXCEEDED: 4,
  NOT_FOUND: 5,
  ALREADY_EXISTS: 6,
  PERMISSION_DENIED: 7,
  RESOURCE_EXHAUSTED: 8,
  FAILED_PRECONDITION: 9,
  ABORTED: 10,
  OUT_OF_RANGE: 11,
  UNIMPLEMENTED: 12,
  INTERNAL: 13,
  UNAVAILABLE: 14,
  DATA_LOSS: 15,
  UNAUTHENTICATED: 16,
} as const;

export type StatusCode = (typeof status)[keyof typeof status];

const NAMES = new Map<number, string>(Object.entries(status).map(([name, code]) => [code, name]));

/** A call that ended with a status other than OK: `code` is the gRPC status, `details` its message. */
export class GrpcError extends Error {
  /**
   * The peer's own status (grpc-status it sent), rather than one this side gave a call it could
   * not complete: an answer that was no gRPC, broke off, or a stream reset.
   */
  readonly sentByPeer: boolean;

  constructor(
    readonly code: number,
    readonly details: string,
    options?: { cause?: unknown; sentByPeer?: boolean },
  ) {
    super(`${code} ${NAMES.get(code) ?? 'UNKNOWN'}: ${details}`, options);
    this.name = 'GrpcError';
    this.sentByPeer = options?.sentByPeer ?? false;
  }
}
