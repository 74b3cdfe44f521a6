export { type ExtractOptions, type ExtractSummary, extractContext } from './extract.js';
export {
  type ContextLimits,
  contextLimitsOf,
  DEFAULT_CONTEXT_LIMITS,
  resolveContextLimits,
} from './limits.js';
export {
  checkFrontendAllowed,
  type FrontendDirective,
  frontendDirective,
  readFrontendDirective,
} from './syntax-directive.js';
export type { EntryType, TarEntry } from './tar.js';
export {
  type ContextSummary,
  ContextValidationStream,
  type ContextValidator,
  type ContextValidatorOptions,
  createContextValidator,
  normalizeDockerfilePath,
} from './validate.js';
