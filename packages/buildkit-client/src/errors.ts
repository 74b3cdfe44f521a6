/** Base class: every error this package throws on purpose carries a stable `code`. */
export class BuildkitError extends Error {
  constructor(
    readonly code: string,
    message: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
    this.name = new.target.name;
  }
}

/** The daemon could not be reached or spoke something else than BuildKit's gRPC API. */
export class BuildkitConnectionError extends BuildkitError {
  constructor(
    message: string,
    readonly address: string,
    options?: { cause?: unknown },
  ) {
    super('BUILDKIT_CONNECTION', message, options);
  }
}

/** The build itself failed: a Dockerfile error, a failing RUN, a missing file. */
export class SolveError extends BuildkitError {
  constructor(
    message: string,
    /** Name of the vertex that failed (e.g. `[builder 2/3] RUN make`), when BuildKit reported one. */
    readonly vertex: string | undefined,
    /** BuildKit's own error text, unchanged. */
    readonly buildkitMessage: string,
    options?: { cause?: unknown },
  ) {
    super('SOLVE_FAILED', message, options);
  }
}

export class CanceledError extends BuildkitError {
  constructor(message = 'build canceled', options?: { cause?: unknown }) {
    super('CANCELED', message, options);
  }
}

/** The daemon does not implement a call (e.g. Control.Info before BuildKit v0.11). */
export class UnsupportedError extends BuildkitError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('UNSUPPORTED', message, options);
  }
}

/** The caller passed something this client cannot send (bad address, bad export spec). */
export class InvalidArgumentError extends BuildkitError {
  constructor(message: string) {
    super('INVALID_ARGUMENT', message);
  }
}
