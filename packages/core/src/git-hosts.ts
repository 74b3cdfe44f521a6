import { AppError } from './errors.js';
import type { Network } from './net/address.js';
import { normalizeHostname, refusedHost } from './net/host.js';
import { hostMatches } from './net/host-patterns.js';

/** Which git hosts the operator lets BuildKit fetch from (KILN_GIT_* settings). */
export interface GitHostPolicy {
  /** Empty: every host not denied. */
  allowedHosts: readonly string[];
  deniedHosts: readonly string[];
  /** Special-purpose addresses (loopback, private, ...) allowed as literal hosts. */
  allowedNetworks: readonly Network[];
}

/**
 * Throws AppError `invalid_context` naming the host when the policy refuses a repository URL
 * (already checked by parseGitUrl). BuildKit, not Kiln, resolves the name, so only the host as
 * written can be judged here: the host lists are how an operator keeps names that resolve to
 * internal addresses out.
 */
export function checkGitHost(url: string, policy: GitHostPolicy, field = 'git'): void {
  const host = normalizeHostname(hostnameOf(new URL(url), field));
  const refuse = (why: string) => {
    throw new AppError('invalid_context', `${field}: the git host ${host} ${why}`);
  };
  if (hostMatches(host, policy.deniedHosts)) refuse('is denied by this Kiln');
  if (policy.allowedHosts.length > 0 && !hostMatches(host, policy.allowedHosts)) {
    refuse('is not among the hosts this Kiln fetches from');
  }
  const why = refusedHost(host, policy.allowedNetworks);
  if (why) refuse(`is ${why}; this Kiln does not fetch from such addresses`);
}

/**
 * The host as a resolver reads it. URL parsing turns `127.1`, `2130706433` or `0x7f.1` into
 * `127.0.0.1` for http(s), but leaves a git:// host as written, and git's resolver still reads
 * those as the loopback address: parsed as an http host, it is judged as what it reaches.
 */
function hostnameOf(url: URL, field: string): string {
  if (url.protocol !== 'git:') return url.hostname;
  try {
    return new URL(`http://${url.host}`).hostname;
  } catch {
    throw new AppError('invalid_context', `${field}: "${url.host.slice(0, 200)}" is not a valid host`);
  }
}
