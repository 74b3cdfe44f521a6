import type { FrontendDirective } from '@kiln/core';

/**
 * The frontend a checked Dockerfile is built with, chosen here and never by BuildKit: with
 * `cmdline` set, BuildKit's Dockerfile frontend does not look for a `# syntax=` directive (nor a
 * BUILDKIT_SYNTAX build arg) and builds with its own parser. A directive the allow-list passed
 * is run as BuildKit itself would forward it: the gateway frontend with that image as `source`
 * and the directive as `cmdline`. So where BuildKit's reading of the directive would differ from
 * Kiln's (versions differ among themselves), only what Kiln checked can run.
 */
export function frontendFor(directive: FrontendDirective): {
  frontend: string;
  attrs: Record<string, string>;
} {
  if (directive.kind !== 'image') return { frontend: 'dockerfile.v0', attrs: { cmdline: '' } };
  const [source = directive.image] = directive.image.split(' ');
  return { frontend: 'gateway.v0', attrs: { source, cmdline: directive.image } };
}
