import { printable } from './format.js';

/**
 * Exit codes a CI job can branch on (documented in the README). 0, 1 and 2 are docker's; 3 and 4
 * tell "retry later" and "fix the token" apart from a build that failed; 130 is Ctrl-C as shells
 * report it.
 */
export const EXIT_OK = 0;
/** The build failed, or the server refused the request as it was (bad spec, context, quota). */
export const EXIT_FAILURE = 1;
export const EXIT_USAGE = 2;
/** Kiln could not be reached, or answered that it cannot serve now (5xx, 429 rate_limited, 408). */
export const EXIT_UNAVAILABLE = 3;
/** The token is missing, wrong, revoked or lacks the scope (401, 403). */
export const EXIT_AUTH = 4;
export const EXIT_INTERRUPTED = 130;
/** The reader of stdout went away (`| head`): what a process killed by SIGPIPE reports. */
export const EXIT_BROKEN_PIPE = 141;

/** The exit code of an API answer: the one place HTTP statuses become exit codes. */
export function exitCodeForStatus(status: number, code: string | undefined): number {
  if (status === 401 || status === 403) return EXIT_AUTH;
  // A 429 that is not Kiln's own quota answer (rate_limited, or a proxy's, without a code) passes;
  // a 408 is an upload that stalled or crawled on the way, as a connection that broke off.
  if (status >= 500 || status === 408 || (status === 429 && code !== 'quota_exceeded')) {
    return EXIT_UNAVAILABLE;
  }
  return EXIT_FAILURE;
}

/**
 * The exit code of a signed download link's answer: its 401 or 403 is a link that expired or does
 * not verify, which no token fixes; otherwise as the API's.
 */
export function exitCodeForLinkStatus(status: number, code: string | undefined): number {
  return status === 401 || status === 403 ? EXIT_FAILURE : exitCodeForStatus(status, code);
}

/**
 * Why a build ended failed when the service, not the build, was at fault (core's
 * BUILD_ERROR_CODES: builders down or lost, storage or Redis trouble): another run may succeed.
 */
const SERVICE_FAILURES: ReadonlySet<string> = new Set([
  'infrastructure',
  'no_builder_available',
  'worker_lost',
  'worker_stopped',
  'context_missing',
  'secrets_unavailable',
]);

/** The exit code of a build that ended without success, from its error code. */
export function exitCodeForBuildError(code: string | undefined): number {
  return code !== undefined && SERVICE_FAILURES.has(code) ? EXIT_UNAVAILABLE : EXIT_FAILURE;
}

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
    super(message, exitCodeForStatus(status, code), code, hint);
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

/** The reader of stdout or stderr went away: the command ends as one killed by SIGPIPE would. */
export class BrokenPipeError extends CliError {
  constructor(stream: 'stdout' | 'stderr') {
    super(`${stream} closed`, EXIT_BROKEN_PIPE);
    this.name = 'BrokenPipeError';
  }
}

/** Why a command's signal was aborted: Ctrl-C unless a broken pipe (or a caller's error) did it. */
export function interruptionOf(signal: AbortSignal): CliError {
  return signal.reason instanceof CliError ? signal.reason : new InterruptedError();
}

export const LOGIN_HINT = 'hint: run kiln login, or set KILN_TOKEN';
export const ENV_TOKEN_HINT =
  'hint: KILN_TOKEN is set and overrides kiln login: check its value, or unset it';

/**
 * How an error is shown: `error: <message> (<code>)`, then its hint; safe for a terminal. Hints
 * come with the error (each client's `hintFor`), which knows where its token came from.
 */
export function formatError(err: CliError): string {
  const { hint } = err;
  return printable(`error: ${err.message}${err.code ? ` (${err.code})` : ''}${hint ? `\n${hint}` : ''}`);
}

/** The message of anything thrown. */
export function messageOf(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}
