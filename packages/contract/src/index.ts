export { ALLOWED_BUILDKIT_ARGS, reservedBuildArg } from './build-args.js';
export { dockerfileInContext } from './dockerfile-path.js';
export { ERROR_CODES, type ErrorCode } from './errors.js';
export {
  ARTIFACT_NAME,
  BYTE_OUTPUT_TYPES,
  type ByteOutputType,
  OUTPUT_TYPES,
  type OutputType,
} from './outputs.js';
// Types only: the schemas themselves are in `@kiln/contract/schemas` (TypeBox is heavy to load).
export type { Artifact, BuildList, BuildView, ErrorBody, Provenance } from './schemas.js';
export { scopeAllows, TOKEN_SCOPES, type TokenScope } from './scopes.js';
export { BUILD_STATUSES, type BuildStatus, FINAL_STATUSES } from './statuses.js';
