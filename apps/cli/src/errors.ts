/** Exit codes: docker's, plus 130 for Ctrl-C as shells report it. */
export const EXIT_OK = 0;
export const EXIT_FAILURE = 1;
export const EXIT_USAGE = 2;
export const EXIT_INTERRUPTED = 130;

/** An error to print as `error: <message> (<code>)`, then `hint`, and exit with `exitCode`. */
export class CliError extends Error {
  constructor(
    message: string,
    readonly exitCode: number = EXIT_FAILURE,
    readonly code?: string,
    readonly hint?: string,
  ) {
    super(message);
    this.name = 'CliError';
  }
}

/** A bad command line: the message, then the command's usage, exit 2. */
export class UsageError extends CliError {
  constructor(
    message: string,
    readonly usage?: string,
  ) {
    super(message, EXIT_USAGE);
    this.name = 'UsageError';
  }
}

/** An `{error: {code, message}}` answer from the API. */
export class ApiError extends CliError {
  constructor(
    message: string,
    code: string,
    readonly status: number,
    hint?: string,
  ) {
    super(message, EXIT_FAILURE, code, hint);
    this.name = 'ApiError';
  }
}

/** The user pressed Ctrl-C. */
export class InterruptedError extends CliError {
  constructor(message = 'interrupted') {
    super(message, EXIT_INTERRUPTED);
    this.name = 'InterruptedError';
  }
}

export const LOGIN_HINT = 'hint: run kiln login, or set KILN_TOKEN';

export function formatError(err: CliError): string {
  return `error: ${err.message}${err.code ? ` (${err.code})` : ''}`;
}

/** The message of anything thrown, with the cause of fetch's "fetch failed" appended. */
export function messageOf(err: unknown): string {
  if (!(err instanceof Error)) return String(err);
  const cause = (err as { cause?: unknown }).cause;
  if (err.message === 'fetch failed' && cause instanceof Error) return `${err.message}: ${cause.message}`;
  return err.message;
}
