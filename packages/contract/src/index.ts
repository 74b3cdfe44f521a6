export { ALLOWED_BUILDKIT_ARGS, reservedBuildArg } from './build-args.js';
export {
  type Artifact,
  ArtifactSchema,
  type BuildList,
  BuildListSchema,
  type BuildView,
  BuildViewSchema,
} from './build-view.js';
export { dockerfileInContext } from './dockerfile-path.js';
export { ERROR_CODES, type ErrorBody, type ErrorCode, ErrorSchema } from './errors.js';
export { BYTE_OUTPUT_TYPES, type ByteOutputType, OUTPUT_TYPES, type OutputType } from './outputs.js';
export { scopeAllows, TOKEN_SCOPES, type TokenScope, TokenScopeSchema } from './scopes.js';
export { BUILD_STATUSES, type BuildStatus, BuildStatusSchema, FINAL_STATUSES } from './statuses.js';
