export { buildApp } from './app.js';
export { bootstrapProject } from './bootstrap.js';
export type { ApiDeps } from './deps.js';
export { createApiDeps } from './services.js';
export { TOKEN_REVOKED_CHANNEL, TokenCache } from './token-cache.js';
