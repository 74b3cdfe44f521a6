/**
 * `@kiln/buildkit-client/context`: what a client needs to prepare a build without talking to
 * BuildKit (fsutil's walk, .dockerignore matching, docker's --output/--secret syntax). It loads
 * no gRPC, so a tool that only prepares contexts (the kiln CLI) can bundle it alone.
 */
export { PatternMatcher, parseDockerignore, type WalkEntry, type WalkOptions, walk } from './fs/index.js';
export { parseCsvAttrs } from './output-spec.js';
export { loadSecrets, MAX_SECRET_SIZE, parseSecretSpec, type SecretSource } from './secret-spec.js';
