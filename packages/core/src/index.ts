export { BYTE_OUTPUT_TYPES, dockerfileInContext } from '@kiln/contract';
export {
  BUILD_CACHE_FULL,
  BUILD_CACHE_ROOT,
  type BuildCacheConfig,
  buildCacheOptions,
  buildCachePrefix,
  CACHE_EXPORT_OPTIONAL,
  type CacheOption,
} from './build-cache.js';
export {
  type BuildSecrets,
  buildSecretsKey,
  buildSecretsTtlSeconds,
  deleteBuildSecrets,
  loadBuildSecrets,
  MAX_SECRET_BYTES,
  MAX_SECRETS,
  parseBuildSecrets,
  requireSecretsKey,
  storeBuildSecrets,
} from './build-secrets.js';
export {
  BUILDER_FEATURES,
  type BuilderCapabilities,
  type BuilderFeature,
  featuresOf,
  normalizePlatform,
  parseBuilderCapabilities,
  type SpecRequirements,
  specRequirements,
  unmetRequirements,
} from './builder-capabilities.js';
export * from './builds/index.js';
export * from './builds.js';
export {
  type BuilderIsolation,
  type BuilderTls,
  CONFIG_VARIABLES,
  ConfigError,
  type KilnConfig,
  loadConfig,
  type ProjectQuotas,
  type StorageConfig,
} from './config.js';
export * from './context/index.js';
export { type CredentialsKeys, credentialsKeysOf } from './credentials-keys.js';
export * from './db/index.js';
export { AppError, ERROR_STATUS, type ErrorCode, httpStatusFor, isAppError } from './errors.js';
export * from './events/index.js';
export {
  type GitContext,
  gitContextAttr,
  gitRefColumn,
  gitSubdirOf,
  isCommitId,
  parseGitContext,
  parseGitUrl,
} from './git-context.js';
export { checkGitHost, type GitHostPolicy } from './git-hosts.js';
export { chooseLogFormat, formatLogLine, type LogFormat, type LogFormatSetting } from './log-format.js';
export { createLogger, type Logger } from './logger.js';
export * from './metrics/index.js';
export { type Network, parseIp, parseNetworks, refusedAddress } from './net/address.js';
export { normalizeHostname } from './net/host.js';
export { hostMatches } from './net/host-patterns.js';
export { redactAddress } from './net/redact-address.js';
export {
  effectiveQuotas,
  loadProjectQuotas,
  type ProjectQuotaRow,
  storedBytesLeft,
} from './quotas.js';
export {
  checkRegistryHost,
  normalizeRegistryHost,
  RegistryCredentialStore,
  type RegistryCredentialView,
  type RegistryPolicy,
} from './registry-credentials.js';
export { resultCacheKey } from './result-cache.js';
export {
  type BuildSpec,
  type BuildSpecInput,
  frontendAttrsFor,
  imageRegistryHosts,
  OUTPUT_TYPES,
  type OutputSpec,
  type OutputType,
  PROVENANCE_MODES,
  type ProvenanceMode,
  parseBuildSpec,
  parseCsvPairs,
  platformsOf,
  recordsProvenance,
  SPEC_FIELDS,
} from './spec.js';
export { removeStaleFiles } from './stale-files.js';
export { findUnstorable, unstorable } from './storable-text.js';
export * from './storage/index.js';
export { generateToken, hashToken, issueToken } from './tokens.js';
export { NO_TRACING, SpanKind, type SpanOptions, startTracing, Tracing } from './tracing.js';
